//! The `herd` command: parse, run, map to an exit code. Errors are printed
//! once, here, with their chain.
//!
//! Exit codes: 0 success; 1 failure (bad config, cannot start, request
//! failed); 2 bad command line; 22 `herd call --fail` got an HTTP status of
//! 400 or more.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use herd::config::{self, Config, LoadOptions};

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "A FastCGI process manager",
    after_long_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the master in the foreground, logging to stderr.
    ///
    /// php-fpm's flags work too, so its unit file or habit carries over:
    /// -y/--fpm-config FILE, -p/--prefix DIR, -t/--test, -R and
    /// -F/--nodaemonize (herd always runs in the foreground).
    Run {
        /// The config file; without one, herd runs its embedded default.
        #[arg(
            long,
            short = 'c',
            value_name = "FILE",
            visible_alias = "fpm-config",
            visible_short_alias = 'y'
        )]
        config: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
        /// Check the config and exit, as `herd check` (php-fpm's -t).
        #[arg(long, short = 't')]
        test: bool,
        /// Accepted for php-fpm's unit files: herd never daemonizes.
        #[arg(
            long = "nodaemonize",
            short = 'F',
            visible_alias = "force-stderr",
            short_alias = 'O'
        )]
        _foreground: bool,
    },
    /// Check a config file and exit 0 if it is valid, 1 with every error;
    /// warnings and notes (a value an override file replaces, a php-fpm
    /// directive without effect under herd) go to stderr.
    Check {
        /// The config file (or -c FILE).
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        #[arg(
            long,
            short = 'c',
            value_name = "FILE",
            visible_alias = "fpm-config",
            visible_short_alias = 'y',
            conflicts_with = "file"
        )]
        config: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Send one FastCGI request and print the response.
    Call {
        /// A unix socket path or host:port.
        addr: String,
        /// Path and query, e.g. /index.php?x=1.
        uri: String,
        #[arg(long, short = 'X', default_value = "GET")]
        method: String,
        /// Send this file as the request body.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// Extra or overriding params, e.g. --param SCRIPT_FILENAME=/srv/www/index.php.
        #[arg(long = "param", short = 'p', value_name = "K=V")]
        params: Vec<String>,
        /// Document root: SCRIPT_FILENAME is the root joined with the path.
        #[arg(long, value_name = "DIR")]
        root: Option<String>,
        /// Exit 22 when the HTTP status is 400 or more.
        #[arg(long, short = 'f')]
        fail: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Control a running master through its control socket.
    Ctl {
        /// The control socket; by default found from --config.
        #[arg(long, value_name = "PATH", global = true)]
        socket: Option<PathBuf>,
        /// The master's config file, to find its control socket.
        #[arg(long, short = 'c', value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        /// Print the master's JSON answers instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// A small FastCGI application (serves on fd 0, as the spec says).
    ExampleApp {
        /// Listen on host:port instead of the socket on fd 0.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Write herd's man pages, or print a shell's completions, from this
    /// binary's own command line (what packages install).
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (for herd ctl: the master refused, \
or the deploy was refused); 2 bad command line (for herd ctl: no master at the socket); \
22 herd call --fail got an HTTP status of 400 or more.";

#[derive(Subcommand)]
enum Generate {
    /// herd.1 and a page for each subcommand (herd-ctl-reload.1, ...), in DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The completion script for SHELL, on standard output.
    Completions { shell: clap_complete::Shell },
}

/// How `run` and `check` read the config.
#[derive(clap::Args)]
struct LoadArgs {
    /// php-fpm's prefix: relative paths and includes are read against it
    /// instead of the config file's directory.
    #[arg(long, short = 'p', value_name = "DIR")]
    prefix: Option<PathBuf>,
    /// Allow pools to run workers as root (php-fpm's -R).
    #[arg(long, short = 'R', visible_alias = "allow-to-run-as-root")]
    allow_root: bool,
}

impl LoadArgs {
    fn options(self) -> LoadOptions {
        LoadOptions {
            allow_root: self.allow_root,
            prefix: self.prefix,
            ..LoadOptions::default()
        }
    }
}

#[derive(Subcommand)]
enum CtlAction {
    /// Pools, generations and workers at a glance: a line per pool, a row
    /// per worker with the request it serves now.
    Status {
        /// Redraw it every second, as `herd ctl top` does.
        #[arg(long)]
        watch: bool,
    },
    /// The status view redrawn live, as top does (Ctrl-C quits); colours
    /// on a terminal only.
    Top {
        /// Seconds between frames.
        #[arg(long, short = 'd', value_name = "SECONDS", default_value_t = 1.0)]
        interval: f64,
        /// Quit after this many frames.
        #[arg(long, short = 'n', value_name = "N")]
        count: Option<u64>,
    },
    /// Re-read the config and roll out a new generation where it changed.
    Reload {
        /// Only this pool, which always gets a new generation.
        #[arg(long)]
        pool: Option<String>,
        /// Roll out even pools whose config did not change.
        #[arg(long)]
        force: bool,
        /// Show progress; exit 0 when the rollout is done, 1 with the
        /// reason when it was refused.
        #[arg(long)]
        wait: bool,
    },
    /// EMERGENCY: replace every worker now. Requests in flight on the old
    /// workers are ABORTED with an error; new requests wait in the queue.
    Restart {
        /// Required: say that aborting requests is what you want.
        #[arg(long, required = true)]
        hard: bool,
        #[arg(long)]
        pool: Option<String>,
        /// Stop old workers N at a time instead of all at once.
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
    },
    /// Stop the master: gracefully, or with --fast at once.
    Stop {
        #[arg(long)]
        fast: bool,
    },
    /// Set a pool's pm.max_children at run time: a static pool's size, the
    /// most workers a dynamic or ondemand pool runs. A reload keeps it
    /// until the config file's pm.max_children changes.
    Scale {
        pool: String,
        #[arg(value_name = "MAX_CHILDREN")]
        max_children: u32,
    },
    /// Every pool's metrics, in OpenMetrics text.
    Metrics,
    /// Replace the running master with this herd binary: the new master
    /// takes over the listeners and starts its own workers; the old one
    /// drains and exits. If the new one fails, the old one keeps serving.
    Upgrade,
}

fn main() -> ExitCode {
    // Before a package upgrade can replace the file: reloads and `herd ctl
    // upgrade` start what is at this path then.
    let _ = config::this_program();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run {
            config,
            load,
            test: true,
            ..
        } => check(config.as_deref(), load.options()),
        Cmd::Run {
            config, load: args, ..
        } => {
            let opts = args.options();
            let cfg = match &config {
                Some(path) => load(path, &opts)?,
                None => embedded_default(&opts)?,
            };
            if config.is_none() {
                announce(&cfg);
            }
            let opts = herd::master::RunOptions {
                config_path: config,
                load: opts,
            };
            herd::master::start(cfg, opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { file, config, load } => check(file.or(config).as_deref(), load.options()),
        Cmd::Call {
            addr,
            uri,
            method,
            body,
            params,
            root,
            fail,
            timeout,
        } => call(addr, uri, method, body, params, root, fail, timeout),
        Cmd::Ctl {
            socket,
            config,
            json,
            action,
        } => ctl(socket, config, json, action),
        Cmd::ExampleApp { listen } => {
            herd::example_app::run(listen.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Generate { what } => generate(what),
    }
}

/// The man pages and completions are made by the binary they describe, so
/// they cannot drift from it, and a `cargo install` user can make them too.
fn generate(what: Generate) -> anyhow::Result<ExitCode> {
    match what {
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("failed to write man pages to {}", dir.display()))?;
        }
        Generate::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "herd", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ctl(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    action: CtlAction,
) -> anyhow::Result<ExitCode> {
    use herd::control::protocol::Request;
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => herd::control::socket_path(&ctl_config(&c)?),
        (None, None) => herd::control::socket_path(&embedded_default(&LoadOptions::default())?),
    };
    let watch = match action {
        CtlAction::Top { interval, count } => Some((interval, count)),
        CtlAction::Status { watch: true } => Some((1.0, None)),
        _ => None,
    };
    if let Some((interval, count)) = watch {
        use std::io::IsTerminal;
        let opts = herd::control::top::Options {
            interval: std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0)),
            count,
            json,
        };
        let mut stdout = std::io::stdout();
        let tty = stdout.is_terminal();
        let screen = herd::control::top::Screen {
            out: &mut stdout,
            tty,
        };
        return herd::control::top::run(&socket, &opts, screen);
    }
    let request = match action {
        CtlAction::Status { .. } | CtlAction::Top { .. } => Request::Status,
        CtlAction::Reload { pool, force, wait } => Request::Reload { pool, force, wait },
        CtlAction::Restart { pool, batch, .. } => Request::Restart { pool, batch },
        CtlAction::Stop { fast } => Request::Stop { fast },
        CtlAction::Scale { pool, max_children } => Request::Scale { pool, max_children },
        CtlAction::Metrics => Request::Metrics,
        CtlAction::Upgrade => Request::Upgrade,
    };
    let style = herd::control::view::Style::for_terminal(std::io::IsTerminal::is_terminal(
        &std::io::stdout(),
    ));
    herd::control::client::run(&socket, &request, json, style, &mut std::io::stdout())
}

/// `herd ctl -c FILE` needs only the control socket's path from the file:
/// an error elsewhere in it is a warning, so a typo on disk never keeps
/// anyone from `status`, `stop` or `upgrade`.
fn ctl_config(path: &Path) -> anyhow::Result<Config> {
    let opts = LoadOptions {
        allow_root: true,
        ..LoadOptions::default()
    };
    let (cfg, errors) = config::load_partly(path, &opts)
        .map_err(|errors| anyhow::anyhow!("invalid config:\n{errors}"))?;
    for e in &errors {
        eprintln!("herd ctl: warning: {e}");
    }
    if !errors.is_empty() {
        eprintln!(
            "herd ctl: warning: going on: herd ctl needs only the control socket's path from {} \
             (a reload would refuse this file)",
            path.display()
        );
    }
    Ok(cfg)
}

/// `herd check` (and `herd run -t`): every error, warning and note.
fn check(path: Option<&Path>, opts: LoadOptions) -> anyhow::Result<ExitCode> {
    let path = path.context("no config file to check: give one with -c FILE")?;
    let cfg = load(path, &opts)?;
    for w in &cfg.warnings {
        eprintln!("herd: warning: {w}");
    }
    for n in &cfg.notes {
        eprintln!("herd: note: {n}");
    }
    println!("{}: ok ({} pool(s))", path.display(), cfg.pools.len());
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path, opts: &LoadOptions) -> anyhow::Result<Config> {
    config::load(path, opts).map_err(|errors| anyhow::anyhow!("invalid config:\n{errors}"))
}

/// The address the embedded default listens on.
const DEFAULT_LISTEN: &str = "127.0.0.1:9900";

/// One pool of `herd example-app` workers on loopback.
fn embedded_default(opts: &LoadOptions) -> anyhow::Result<Config> {
    let user = if nix::unistd::Uid::effective().is_root() && !opts.allow_root {
        "user = nobody\n"
    } else {
        ""
    };
    let text = format!(
        "[global]\n\
         [example]\n\
         listen = {DEFAULT_LISTEN}\n\
         pm = static\n\
         pm.max_children = 4\n\
         command = herd\n\
         args = example-app\n\
         {user}"
    );
    let mut cfg = config::parse_str(&text, Path::new("<embedded default>"), opts)
        .map_err(|e| anyhow::anyhow!("embedded default config is invalid:\n{e}"))?;
    cfg.file = None;
    Ok(cfg)
}

fn announce(cfg: &Config) {
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "herd".into());
    for pool in &cfg.pools {
        eprintln!(
            "herd: pool '{}' serves on {}; try:\n  {me} call {} /hello",
            pool.name, pool.listen, pool.listen
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn call(
    addr: String,
    uri: String,
    method: String,
    body: Option<PathBuf>,
    params: Vec<String>,
    root: Option<String>,
    fail: bool,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let body = match body {
        Some(p) => std::fs::read(&p).with_context(|| format!("failed to read {}", p.display()))?,
        None => Vec::new(),
    };
    let params = params
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--param '{kv}' is not K=V"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let req = herd::client::Request {
        method,
        uri,
        root,
        params,
        body,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resp = runtime.block_on(async {
        let work = async {
            let mut stream = herd::client::connect(&addr).await?;
            herd::client::call(&mut stream, &req, false).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(timeout), work)
            .await
            .map_err(|_| anyhow::anyhow!("no complete response from {addr} within {timeout}s"))?
            .map_err(anyhow::Error::from)
    })?;
    use std::io::Write;
    std::io::stderr().write_all(&resp.stderr)?;
    std::io::stdout().write_all(&resp.stdout)?;
    match resp.status() {
        Some(s) if fail && s >= 400 => Ok(ExitCode::from(22)),
        _ => Ok(ExitCode::SUCCESS),
    }
}
