//! The `sidecache` command: parse arguments, set up logs, load the config,
//! and run, check or explain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sidecache::config::RedisServers;
use sidecache::{App, Config};
use tokio_util::sync::CancellationToken;

/// Exit code for a config that does not validate when serving (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "sidecache",
    version,
    about = "A caching sidecar proxy driven by YAML rules"
)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        env = "SIDECACHE_CONFIG",
        global = true,
        default_value = "sidecache.yaml"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, env = "SIDECACHE_LOG_FORMAT", global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Reload when the config file (or its folder) changes.
    #[arg(long, env = "SIDECACHE_WATCH", global = true, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config: print errors with file:line:column and warnings; exit 1 on error.
    Check,
    /// Show which rule a request matches, its key, tier, TTL and tags.
    Explain {
        /// Method, e.g. GET.
        method: String,
        /// URL or path, e.g. http://shop.local/products/42 or /products/42.
        url: String,
        /// A request header, 'Name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Print the JSON Schema of the config file, for editors.
    Schema,
    /// Print what the cache saved the backend since start, per rule: from one
    /// replica's admin listener, or several added up.
    Report {
        /// A replica's admin address, e.g. http://10.0.0.5:9901 (repeatable).
        #[arg(long = "admin", required = true)]
        admins: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Explain {
            method,
            url,
            headers,
        } => match Config::load(&cli.config) {
            Ok(loaded) => {
                match sidecache::explain::explain(&loaded.config, &method, &url, &headers) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => run(&cli.config, cli.watch),
        Command::Report { admins } => report(&admins),
        Command::Schema => match serde_json::to_string_pretty(&Config::json_schema()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `sidecache report`: each replica's `GET /report`, added up.
fn report(admins: &[String]) -> ExitCode {
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let reports = runtime.block_on(async {
        let mut reports = Vec::new();
        for admin in admins {
            match fetch_report(admin).await {
                Ok(r) => reports.push(r),
                Err(e) => return Err(format!("{admin}: {e}")),
            }
        }
        Ok(reports)
    });
    match reports {
        Ok(reports) => {
            let merged = sidecache::offload::Report::merge(&reports);
            print!("{}", merged.table(reports.len()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime `builder` makes, with I/O and timers; `None` (said on
/// stderr) when it cannot start.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// One replica's `GET /report`, within 5 s.
async fn fetch_report(admin: &str) -> Result<sidecache::offload::Report, String> {
    use http_body_util::BodyExt;
    let base = admin.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let uri: http::Uri = format!("{base}/report")
        .parse()
        .map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("the admin listener speaks plain http".to_owned());
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let ask = async {
        let res = client
            .get(uri)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("answer cut short: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a report: {e}"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .map_err(|_| "no answer in 5 s".to_owned())?
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {}", w.display(path));
            }
            let redis = match loaded.config.redis.as_ref().map(|r| &r.servers) {
                None => "no Redis".to_owned(),
                Some(RedisServers::Url(_)) => "one Redis server".to_owned(),
                Some(RedisServers::Cluster(seeds)) => {
                    format!("a Redis Cluster through {} seed nodes", seeds.len())
                }
            };
            let regions = match &loaded.config.regions {
                Some(r) if !r.others.is_empty() => {
                    let others: Vec<&str> = r.others.iter().map(|o| o.name.as_str()).collect();
                    format!(", region {}; purges reach {}", r.here, others.join(", "))
                }
                _ => String::new(),
            };
            println!(
                "{}: ok ({} rules, {redis}{regions})",
                path.display(),
                loaded.config.rules.rules().len()
            );
            for rule in loaded.config.rules.rules() {
                for tag in rule.tags.iter().filter(|t| t.fans_out()) {
                    println!(
                        "  rule {}: tag `{tag}` gives an entry at most {} tags; an answer with more elements is not stored",
                        rule.name,
                        sidecache::rules::MAX_FAN_OUT
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, watch: bool) -> ExitCode {
    // Validate before binding any socket.
    let loaded = match Config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{}", w.display(path));
    }
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let config = loaded.config;
        let (listen, admin_listen) = (config.listen, config.admin.listen);
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin_listener = match tokio::net::TcpListener::bind(admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {admin_listen} (admin): {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = match App::build(config) {
            Ok(a) => App {
                watch_config: watch,
                ..a
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let token = CancellationToken::new();
        tokio::spawn(sidecache::shutdown::on_signal(token.clone()));
        tracing::info!(%listen, admin = %admin_listen, "sidecache serving");
        app.run(listener, admin_listener, token).await;
        ExitCode::SUCCESS
    })
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
