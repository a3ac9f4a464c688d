//! The command line: `echotrace run | demo | replay | query | serve-sql | compact | backtest`, with
//! `--help` on each.

use crate::config::{Config, StageRole};
use crate::metrics::Metrics;
use crate::query::output::Format;
use crate::shutdown;
use crate::sinks::parquet::ParquetSink;
use crate::stages::Running;
use clap::{Args, Parser, Subcommand, ValueEnum};
use echotrace_core::detector::Detector;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// echotrace: detects content being amplified across platforms, within seconds.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (see deploy/echotrace.toml); given again, each later file's keys
    /// override the earlier ones' (ECHOTRACE_CONFIG: comma-separated). `ECHOTRACE_…` variables
    /// override them all.
    #[arg(long, global = true, env = "ECHOTRACE_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume posts from the configured Kafka cluster until stopped (Ctrl-C or SIGTERM).
    Run,
    /// Run everything on this machine: an in-process Kafka, a bundled sample stream with an
    /// amplification campaign, the detector, and the API on localhost.
    Demo(DemoArgs),
    /// Run the pipeline over a file of posts (JSONL, optionally gzipped) and write the datasets.
    Replay(ReplayArgs),
    /// Run SQL over the stored datasets (posts, edges, cascades, cascade_merges, alerts, reviews); with no
    /// statement, an interactive prompt with history.
    Query(QueryArgs),
    /// Serve the stored datasets to Arrow Flight SQL clients (DBeaver, ADBC, JDBC) until stopped
    /// (Ctrl-C or SIGTERM).
    ServeSql(ServeSqlArgs),
    /// Merge the small files of closed event-hour partitions into one sorted file each, dropping
    /// rows written twice.
    Compact(CompactArgs),
    /// Run a candidate rules file beside the configured rules over the same history (a stream, or
    /// a past run's datasets) and print what it would add and remove, pages per million posts, and
    /// how soon labelled campaigns would have paged.
    Backtest(BacktestArgs),
}

/// Options of `echotrace backtest`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("history").required(true).args(["input", "data"])))]
pub struct BacktestArgs {
    /// The candidate rules file (the format of deploy/rules.toml).
    #[arg(long)]
    pub rules: PathBuf,
    /// A stream of posts, one JSON object per line (`.gz` accepted), linked as `replay` links it.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The output directory of a past `run`, `demo` or `replay`: its stored posts, in event-time
    /// order, with the embeddings it stored.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Known campaigns: one `post_id<TAB>campaign` per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// How to print the comparison.
    #[arg(long, value_enum, default_value_t = BacktestFormat::Table)]
    pub format: BacktestFormat,
}

/// How `echotrace backtest` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BacktestFormat {
    /// Aligned text.
    Table,
    /// One JSON object, for CI.
    Json,
}

/// Options of `echotrace compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Output directory of `run`, `demo` or `replay` (default: the configured `output.dir`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Compact an hour once it ended at least this many minutes ago (wall clock), so late posts
    /// have landed.
    #[arg(long, default_value_t = 60)]
    pub min_age_minutes: i64,
}

/// Options of `echotrace serve-sql`.
#[derive(Debug, Args)]
pub struct ServeSqlArgs {
    /// Output directory of `run`, `demo` or `replay` (default: the configured `output.dir`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on (default: the configured `query.listen`, 127.0.0.1:32010). Any address
    /// but loopback requires a token (`query.token` or `query.token_file`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Options of `echotrace query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Output directory of `run`, `demo` or `replay` (default: the configured `output.dir`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run the SQL in this file instead of a statement on the command line.
    #[arg(long, conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// How to write the result.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the result to this file instead of standard output (required for parquet).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The SQL statement.
    pub sql: Option<String>,
}

/// Options of `echotrace demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stream seconds replayed per wall-clock second (the sample spans 30 minutes).
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// Where the API and /metrics listen.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Output directory for the Parquet datasets.
    #[arg(long, default_value = "echotrace-demo-data")]
    pub out: PathBuf,
    /// Exit once the whole sample has been processed instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
}

/// Options of `echotrace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The posts, one JSON object per line (`.gz` accepted).
    #[arg(long)]
    pub input: PathBuf,
    /// Output directory for the Parquet datasets (and `dead_letters.jsonl`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses the command line, runs the command, and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    init_logging(format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once: a plain line for a person, or a structured record for a log pipeline.
            match format {
                LogFormat::Text => eprintln!("error: {error:#}"),
                LogFormat::Json => tracing::error!("{error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ECHOTRACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    match cli.command {
        Command::Run => {
            let (trigger, shutdown) = shutdown::channel();
            trigger.on_signals();
            let running = match config.stage.role {
                StageRole::Prepare => crate::stages::prepare::start(config, shutdown).await?,
                StageRole::Link => crate::stages::link::start(config, shutdown).await?,
                StageRole::Score => crate::stages::score::start(config, shutdown).await?,
                StageRole::Gate => crate::stages::gate::start(config, shutdown).await?,
                StageRole::Whole | StageRole::Detect => {
                    let running = crate::run::start(config, None, shutdown).await?;
                    Running { api_address: running.api_address, consumer: running.consumer, server: running.server }
                }
            };
            running.consumer.await??;
            running.server.await?;
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(config, args).await,
        Command::Replay(args) => replay(config, args),
        Command::Query(args) => query(config, args).await,
        Command::ServeSql(args) => serve_sql(config, args).await,
        Command::Backtest(args) => backtest(config, args).await,
        Command::Compact(args) => {
            let data = args.data.unwrap_or(config.output.dir);
            let options = crate::compact::CompactOptions {
                min_age: chrono::Duration::minutes(args.min_age_minutes),
                ..Default::default()
            };
            let summary = crate::compact::compact(&data, &options, chrono::Utc::now()).await?;
            println!(
                "compacted {} partitions: {} files into {} rows; {} files of an interrupted run removed",
                summary.partitions, summary.files_in, summary.rows_out, summary.leftovers_removed
            );
            Ok(())
        }
    }
}

async fn serve_sql(config: Config, args: ServeSqlArgs) -> anyhow::Result<()> {
    let data = args.data.unwrap_or(config.output.dir);
    let listen = args.listen.unwrap_or(config.query.listen);
    let token = config.query.token()?;
    let (trigger, shutdown) = shutdown::channel();
    trigger.on_signals();
    Ok(crate::query::flight::serve(&data, listen, token, shutdown).await?)
}

async fn query(config: Config, args: QueryArgs) -> anyhow::Result<()> {
    let data = args.data.unwrap_or(config.output.dir);
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)?,
        (None, None) => return crate::query::prompt::interactive(&data).await,
    };
    let session = crate::query::session(&data).await?;
    let batches = crate::query::run(&session, &sql).await?;
    match &args.output {
        Some(path) if args.format != Format::Parquet => {
            crate::query::output::write(&batches, args.format, &mut std::fs::File::create(path)?, None)
        }
        path => crate::query::output::write(&batches, args.format, &mut std::io::stdout().lock(), path.as_deref()),
    }
}

async fn backtest(config: Config, args: BacktestArgs) -> anyhow::Result<()> {
    use crate::backtest::{Backtest, Labels, input};
    use anyhow::Context;
    let configured = config.alerting.rules()?;
    let candidate_text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("cannot read candidate rules {}", args.rules.display()))?;
    let candidate = echotrace_core::score::rules::RuleSet::from_toml(&candidate_text)
        .with_context(|| format!("candidate rules {}", args.rules.display()))?;
    let labels = match &args.labels {
        Some(path) => Labels::read(path)?,
        None => Labels::default(),
    };
    let mut backtest =
        Backtest::new(config.detector.clone(), vec![configured, candidate], &config.alerting.score_config(), labels);
    let embedder: Option<Box<dyn crate::embed::cached::BatchEmbed>> = match config.detector.semantic.enabled {
        true => Some(Box::new(crate::embed::cached::CachedEmbedder::new(
            crate::embed::Embedder::new(&config.embed).context("semantic linking is on (detector.semantic.enabled)")?,
            config.embed.cache_entries,
        ))),
        false => None,
    };
    let mut feeder = input::Feeder::new(&mut backtest, embedder, config.embed.batch_size);
    match (&args.input, &args.data) {
        (Some(path), _) => {
            let invalid = input::feed_jsonl(path, &mut feeder)?;
            if invalid > 0 {
                eprintln!("{invalid} lines of {} are not valid posts and were left out", path.display());
            }
        }
        (None, Some(dir)) => {
            input::feed_stored(dir, &mut feeder).await?;
        }
        (None, None) => unreachable!("clap requires --input or --data"),
    }
    drop(feeder);
    let candidate_name = format!("candidate {}", args.rules.display());
    let report = backtest.finish(&["configured", &candidate_name]);
    let mut out = std::io::stdout().lock();
    match args.format {
        BacktestFormat::Table => report.write_table(&mut out)?,
        BacktestFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
    }
    Ok(())
}

fn replay(config: Config, args: ReplayArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let metrics = Arc::new(Metrics::new());
    let detector = Arc::new(Mutex::new(Detector::new(config.detector.clone())));
    let sink = ParquetSink::new(&args.out)?.with_embeddings(config.output.store_embeddings);
    let mut pipeline = crate::pipeline::from_config(&config, detector.clone(), sink, metrics.clone())?;
    let summary = crate::replay::replay(&args.input, &mut pipeline, config.output.flush_rows, &args.out)?;
    let detector = detector.lock().expect("detector lock poisoned");
    let stats = detector.stats();
    println!(
        "replayed {} lines in {:.1}s ({:.0} posts/s): {} posts, {} duplicates, {} dead letters",
        summary.lines,
        summary.seconds,
        summary.posts as f64 / summary.seconds.max(1e-9),
        summary.posts,
        summary.duplicates,
        summary.dead_letters
    );
    let kinds: Vec<String> = echotrace_core::records::EdgeKind::ALL
        .iter()
        .zip(stats.edges_by_kind)
        .map(|(kind, count)| format!("{}={count}", kind.as_str()))
        .collect();
    println!("edges: {}; cascade merges: {}", kinds.join(" "), stats.merges);
    println!("late posts (past detector.allowed_lateness_secs): {}", stats.late);
    if let Some(bytes) = summary.peak_rss_bytes {
        println!("peak resident memory: {bytes} bytes ({:.0} MiB)", bytes as f64 / (1 << 20) as f64);
    }
    let embedded = metrics.embeddings.get();
    println!(
        "texts embedded: {embedded} ({:.3} per post), {} reused from the embedding cache",
        embedded as f64 / summary.posts.max(1) as f64,
        metrics.embedding_reuses.get()
    );
    println!("largest cascades in the final window:");
    for cascade in detector.graph().top_cascades(5) {
        println!(
            "  {} root {} size {} depth {} platforms {}",
            cascade.cascade_id,
            cascade.root_post_id,
            cascade.size,
            cascade.depth,
            cascade.platforms.join(",")
        );
    }
    let fired: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("echotrace_alert_transitions_total{") && l.contains("state=\"firing\""))
        .map(str::to_owned)
        .collect();
    println!("alerts fired: {}", if fired.is_empty() { "none".to_owned() } else { fired.join("; ") });
    println!("datasets written under {}", args.out.display());
    Ok(())
}
