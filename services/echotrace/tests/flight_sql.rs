//! `echotrace serve-sql` with a third-party client: ADBC's Flight SQL driver, through Python's
//! DB-API (`tests/flight_sql_client.py`), over the datasets of a replay. Its results equal
//! `echotrace query`'s; it lists the six tables; bad SQL comes back as an error with its position
//! and the server keeps serving; files flushed after the start are read; with a token, calls
//! without it are refused. It needs python3 with `adbc-driver-flightsql` and pyarrow (`scripts/setup
//! --test`): without them the test says so and passes, unless `ECHOTRACE_E2E_REQUIRED=1`, where it
//! fails.

mod common;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flight_sql_client.py");

/// Starts `serve-sql` over `data` on a free loopback port, with `env` set; returns the server and
/// the URI to connect to.
fn serve(data: &Path, env: &[(&str, &str)]) -> (Reaper, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["serve-sql", "--data", data.to_str().unwrap(), "--listen", &listen])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the Flight SQL server", Duration::from_secs(30), || std::net::TcpStream::connect(&listen).is_ok());
    (server, format!("grpc://{listen}"))
}

/// Runs the client: (succeeded, stdout, stderr).
fn client(uri: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("python3").arg(CLIENT).arg(uri).args(args).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Runs `sql` through the client, with `options`, and returns its result, read back from the Arrow
/// file it wrote.
fn fetch(uri: &str, options: &[&str], sql: &str, dir: &Path) -> Vec<RecordBatch> {
    let file = dir.join("result.arrow");
    let (ok, _, stderr) = client(uri, &[options, &["--arrow", file.to_str().unwrap(), sql]].concat());
    assert!(ok, "{sql}: {stderr}");
    arrow_ipc::reader::FileReader::try_new(std::fs::File::open(&file).unwrap(), None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `echotrace query`'s result for `sql`, through a Parquet file.
fn query(data: &Path, sql: &str, dir: &Path) -> Vec<RecordBatch> {
    let file = dir.join("result.parquet");
    let args = ["query", "--data", data.to_str().unwrap(), "--format", "parquet", "--output", file.to_str().unwrap()];
    let output = echotrace(&[&args[..], &[sql]].concat());
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
    reader.map(Result::unwrap).collect()
}

/// The rows as printed, sorted: equal for equal results whatever the order of rows with equal keys
/// and whatever the string type (views or not).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let table = arrow_cast::pretty::pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = table.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Whether python3 can load the client's modules; if not, the test is skipped, or fails when
/// end-to-end tests are required.
fn client_available() -> bool {
    let check = Command::new("python3").args(["-c", "import adbc_driver_flightsql.dbapi, pyarrow"]).output();
    if check.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    assert!(!required, "python3 with adbc-driver-flightsql and pyarrow missing and ECHOTRACE_E2E_REQUIRED=1");
    eprintln!(
        "skipping: python3 with adbc-driver-flightsql and pyarrow not installed (scripts/setup --test installs them)"
    );
    false
}

#[test]
fn flight_sql_clients_query_the_replayed_sample() {
    if !client_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = replay_sample(dir.path());
    let (mut server, uri) = serve(&data, &[]);

    // The same answers as `echotrace query`: a count, and the alert's reproducing SQL as stored.
    let count = "SELECT count(*) AS n FROM posts";
    assert_eq!(rows(&fetch(&uri, &[], count, dir.path())), rows(&query(&data, count, dir.path())));
    let (ok, printed, stderr) = client(&uri, &[count]);
    assert!(ok && printed.trim() == "1", "{printed}{stderr}");
    let unprepared = fetch(&uri, &["--unprepared"], count, dir.path());
    assert_eq!(rows(&unprepared), rows(&query(&data, count, dir.path())));
    let alert = "SELECT sql FROM alerts WHERE rule = 'amplification_campaign' AND state = 'firing' LIMIT 1";
    let stored = query(&data, alert, dir.path());
    let sql = arrow_cast::display::array_value_to_string(stored[0].column(0), 0).unwrap();
    let campaign = fetch(&uri, &[], &sql, dir.path());
    assert_eq!(campaign.iter().map(RecordBatch::num_rows).sum::<usize>(), 46);
    assert_eq!(rows(&campaign), rows(&query(&data, &sql, dir.path())));

    // What DBeaver and other tools list: the server, the six tables, a table's columns.
    let (ok, listing, stderr) = client(&uri, &["--catalog"]);
    assert!(ok, "{stderr}");
    let mut lines = listing.lines();
    assert_eq!(lines.next(), Some("echotrace"));
    let tables: Vec<&str> = lines.by_ref().take(6).collect();
    for table in ["posts", "edges", "cascades", "cascade_merges", "alerts", "reviews"] {
        assert!(tables.contains(&format!("datafusion.public.{table}").as_str()), "{table} not in {listing}");
    }
    assert!(lines.next().unwrap().starts_with("post_id,"), "{listing}");

    // Errors reach the client with DataFusion's message, and the server goes on serving.
    let (ok, _, bad) = client(&uri, &["SELEC post_id FROM posts"]);
    assert!(!ok && bad.contains("Line: 1") && bad.contains("Column"), "{bad}");
    let (ok, _, missing) = client(&uri, &["SELECT * FROM likes"]);
    assert!(!ok && missing.contains("likes") && missing.contains("not found"), "{missing}");
    let (ok, _, ddl) = client(&uri, &["CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd'"]);
    assert!(!ok && ddl.contains("DDL not supported"), "read-only: {ddl}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server is still running");

    // A file flushed after the server started is read by the next query.
    let posts = |batches: &[RecordBatch]| batches[0].column(0).as_primitive::<Int64Type>().value(0) as usize;
    assert_eq!(posts(&fetch(&uri, &[], count, dir.path())), SAMPLE.lines().count());
    let first = dataset_files(&data.join("posts")).remove(0);
    std::fs::copy(&first, first.with_file_name("part-flushed-later.parquet")).unwrap();
    let grown = fetch(&uri, &[], count, dir.path());
    assert!(posts(&grown) > SAMPLE.lines().count());
    assert_eq!(rows(&grown), rows(&query(&data, count, dir.path())));
    drop(server);

    // With a token: refused without it or with another, served with it, as a bearer token or as
    // the password of a login (the handshake of the JDBC driver).
    let (_server, uri) = serve(&data, &[("ECHOTRACE_QUERY__TOKEN", "s3cret-token")]);
    let (ok, _, refused) = client(&uri, &[count]);
    assert!(!ok && refused.contains("Unauthenticated") && refused.contains("requires a token"), "{refused}");
    let (ok, _, wrong) = client(&uri, &["--token", "guess", count]);
    assert!(!ok && wrong.contains("invalid token"), "{wrong}");
    let (ok, printed, stderr) = client(&uri, &["--token", "s3cret-token", count]);
    assert!(ok && printed.trim() == "1", "{stderr}");
    let (ok, printed, stderr) = client(&uri, &["--login", "analyst:s3cret-token", count]);
    assert!(ok && printed.trim() == "1", "{stderr}");
    let (ok, _, stderr) = client(&uri, &["--login", "analyst:guess", count]);
    assert!(!ok && stderr.contains("invalid token"), "{stderr}");
}

#[test]
fn listening_beyond_loopback_requires_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("posts")).unwrap();
    let output = echotrace(&["serve-sql", "--data", dir.path().to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without a token") && stderr.contains("ECHOTRACE_QUERY__TOKEN"), "{stderr}");
    let output = echotrace(&["serve-sql", "--data", dir.path().join("nothing").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("not an echotrace output directory"), "{stderr}");
}
