//! The real broker (tansu) and the third-party client (kcat) the end-to-end tests drive, and
//! reading an instance's metrics.

use super::{Reaper, free_port, http_get, wait_for};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// tansu (`ECHOTRACE_TANSU`, default `~/.cache/echotrace/tools/bin/tansu`) and kcat (on the PATH);
/// `None` (the caller skips) when either is missing, unless `ECHOTRACE_E2E_REQUIRED=1`.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let tansu = std::env::var_os("ECHOTRACE_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/echotrace/tools/bin/tansu")
    });
    let kcat = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kcat"))
        .find(|p| p.exists());
    match (tansu.exists(), kcat) {
        (true, Some(kcat)) => Some((tansu, kcat)),
        _ => {
            let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "tansu ({}) or kcat missing and ECHOTRACE_E2E_REQUIRED=1", tansu.display());
            eprintln!("skipping: tansu or kcat not installed (run .ci/run to install them)");
            None
        }
    }
}

/// The librdkafka that the rdkafka build produced: Debian's kcat links an older one that cannot talk
/// to tansu, so kcat runs with this one first on its library path.
pub fn librdkafka_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(target);
    for profile in ["debug", "release"] {
        if let Ok(entries) = std::fs::read_dir(target.join(profile).join("build")) {
            for entry in entries.flatten() {
                let dir = entry.path().join("out/src");
                if dir.join("librdkafka.so.1").exists() {
                    return dir;
                }
            }
        }
    }
    panic!("no librdkafka.so.1 under {}", target.display());
}

pub fn kcat(kcat: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new(kcat)
        .args(args)
        .env("LD_LIBRARY_PATH", librdkafka_dir())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kcat {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A tansu broker on loopback `port`, storing in `storage` (`memory://tansu/`, or a `sqlite://`
/// file relative to `dir`, which outlives the process); returns it and its address.
pub fn start_tansu(tansu: &Path, storage: &str, port: u16, dir: &Path) -> (Reaper, String) {
    start_tansu_with(tansu, storage, port, dir, &[])
}

/// As [`start_tansu`], with more arguments to `tansu broker` (`--authentication`: clients must
/// authenticate with SASL first; tansu then checks SCRAM passwords, but takes any for PLAIN).
pub fn start_tansu_with(tansu: &Path, storage: &str, port: u16, dir: &Path, arguments: &[&str]) -> (Reaper, String) {
    let broker = format!("127.0.0.1:{port}");
    let url = format!("tcp://{broker}");
    let child = Command::new(tansu)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage])
        .args(arguments)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the broker to listen", Duration::from_secs(30), || std::net::TcpStream::connect(&broker).is_ok());
    (Reaper(child), broker)
}

/// Creates a topic with tansu's own client.
pub fn create_topic(tansu: &Path, broker: &str, topic: &str, partitions: u32) {
    let status = Command::new(tansu)
        .args([
            "topic",
            "create",
            topic,
            "--broker",
            &format!("tcp://{broker}"),
            "--partitions",
            &partitions.to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "creating {topic}");
}

/// Creates a SCRAM-SHA-512 user with tansu's own client, which cannot authenticate itself: against
/// a broker without `--authentication`, whose storage a broker with it then serves.
pub fn create_scram_user(tansu: &Path, broker: &str, name: &str, password: &str) {
    let status = Command::new(tansu)
        .args(["user", "create", name, password, "--broker", &format!("tcp://{broker}"), "--mechanism", "scram512"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "creating the user {name}");
}

/// A free loopback address for an instance's API.
pub fn free_http() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// The sum of every series of a metric family (all label sets) on the instance's `/metrics`.
pub fn metric(address: SocketAddr, family: &str) -> f64 {
    echotrace::metrics::sum_of_family(&http_get(address, "/metrics").1, family)
}

/// Starts `echotrace run` with `config`, its API on `http` and its log in `log`.
pub fn start_instance(config: &Path, http: SocketAddr, log: &Path) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ECHOTRACE_HTTP__LISTEN", http.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The group's committed offset of each of the first `partitions` partitions of `posts` (-1 where
/// there is none, or the broker does not answer).
pub fn committed_offsets(broker: &str, group: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let verifier: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker).set("group.id", group).create().unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition("posts", partition);
    }
    match verifier.committed_offsets(list, Duration::from_secs(10)) {
        Ok(committed) => committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect(),
        Err(_) => vec![-1; partitions as usize],
    }
}
