//! `veil`: the one binary. `init` and `serve` work on a data directory; every other command
//! talks to a running server over the REST API, as any client would.
//!
//! # Layout
//! - `serve`: `init`, `serve` and `serve --demo`.
//! - `client`: the REST client behind the administration and catalogue commands.
//! - `walkthrough`: a scenario of `examples/` played end to end against its own demo server.

mod client;
mod serve;
mod walkthrough;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Veil: a privacy-preserving data-sharing broker (数据可用不可见).
#[derive(Debug, Parser)]
#[command(name = "veil", version, about)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for log collectors.
    #[arg(long, env = "VEIL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new data directory with a first admin user, whose token goes to a file.
    Init {
        /// The data directory to create (must not exist, or be empty).
        #[arg(long, env = "VEIL_DATA_DIR")]
        data_dir: PathBuf,
        /// Where to write the admin token (created with mode 0600; never overwritten).
        #[arg(long)]
        admin_token_file: PathBuf,
        /// The admin user's id.
        #[arg(long, default_value = "admin")]
        admin_id: String,
    },
    /// Run the server.
    Serve(ServeArgs),
    /// Departments (create: admin).
    #[command(subcommand)]
    Department(DepartmentCommand),
    /// Users (admin).
    #[command(subcommand)]
    User(UserCommand),
    /// Tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Datasets: register and retire (stewards), list and show (anyone).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Access requests: ask (analysts), decide (stewards of the dataset's department), list;
    /// and what the policy lets you do with a dataset.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Reload the policy files (admin).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show who the token belongs to.
    Whoami(Remote),
    /// Run one SQL query (analysts) and print the answer as a table.
    Query(QueryArgs),
    /// Your privacy budget: epsilon spent and left per dataset over the rolling window.
    Budget(Remote),
    /// The audit log: verify a copy offline, export its public key, search it (auditors).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Play a scenario of `examples/` end to end: start the demo on a temporary directory, run
    /// every step of its `walkthrough.json` as the demo users it names, print what each got.
    Walkthrough(WalkthroughArgs),
}

#[derive(Debug, Args)]
struct WalkthroughArgs {
    /// The scenario's directory, e.g. `examples/elderly-care`.
    dir: PathBuf,
    /// Residents in the demo's person space (the default is `serve --demo`'s).
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    /// Also write every step's HTTP status and JSON body to this file, as a JSON array.
    #[arg(long)]
    answers: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an audit log offline, with only its public key: every record's hash, the chain,
    /// and every signed checkpoint. Exits non-zero at the first bad record.
    Verify {
        /// A data directory, or a copy of its `audit/` directory.
        #[arg(long)]
        dir: PathBuf,
        /// The exported public key (see `veil audit public-key`).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Print the public key that verifies a data directory's audit log.
    PublicKey {
        /// The data directory.
        #[arg(long, env = "VEIL_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Search the audit log on a server (auditors), oldest first.
    Search(Box<AuditSearchArgs>),
    /// Export every matching record from a server (auditors), oldest first, as JSON lines or
    /// Parquet.
    Export(Box<AuditExportArgs>),
}

/// Which audit records: every filter given must match.
#[derive(Debug, Args)]
struct AuditFilter {
    /// The acting user.
    #[arg(long)]
    user: Option<String>,
    /// The acting user's department.
    #[arg(long)]
    department: Option<String>,
    /// A dataset (`civil.residents`) or all of a department's (`civil`).
    #[arg(long)]
    dataset: Option<String>,
    /// allowed, denied, failed, dry_run, ok or error.
    #[arg(long)]
    decision: Option<String>,
    /// The action, e.g. query, dataset.register, auth.failed.
    #[arg(long)]
    action: Option<String>,
    /// At or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// Only records after this sequence number.
    #[arg(long)]
    after: Option<u64>,
    /// The request a record came from: the audit id an answer or refusal carries.
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(Debug, Args)]
struct AuditSearchArgs {
    #[command(flatten)]
    filter: AuditFilter,
    /// Records to show, at most 1000.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the server's JSON instead of one line per record.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Args)]
struct AuditExportArgs {
    #[command(flatten)]
    filter: AuditFilter,
    /// `jsonl` (one record per line) or `parquet`.
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "parquet"])]
    format: String,
    /// Write the records to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// One read-only SQL query over `department.dataset` tables; `-` reads it from standard
    /// input (a query starting with `--` needs `--file` or `-`).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    sql: Option<String>,
    /// Read the query from this file instead.
    #[arg(long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
    /// Result mode: aggregate, deidentified or dp.
    #[arg(long, default_value = "aggregate")]
    mode: String,
    /// Decide and explain without running (in dp mode: what it would cost).
    #[arg(long)]
    dry_run: bool,
    /// Dp mode: the epsilon to spend with discrete Laplace noise (default: a tenth of the
    /// smallest cap among the datasets, at most 1).
    #[arg(long, conflicts_with = "rho")]
    epsilon: Option<f64>,
    /// Dp mode: spend rho (zero-concentrated dp) with discrete Gaussian noise instead.
    #[arg(long)]
    rho: Option<f64>,
    /// Dp mode: instead of epsilon, the 95% half-width a noisy column needs, as COLUMN=WIDTH
    /// (repeatable); the query spends the least epsilon (or rho) that gives them all.
    #[arg(long, value_name = "COLUMN=WIDTH", conflicts_with_all = ["epsilon", "rho"])]
    accuracy: Vec<String>,
    /// Dp mode: laplace or gaussian, with --accuracy or for the default budget (without it:
    /// the noise the datasets' stewards chose).
    #[arg(long, value_parser = ["laplace", "gaussian"], conflicts_with_all = ["epsilon", "rho"])]
    noise: Option<String>,
    /// How to print the answer: `table` (the report below it), `json` (the server's answer),
    /// `csv` (dp intervals as `<column>_ci95_low`/`_high` columns; the rest of the report on
    /// standard error), `arrow` (an Arrow IPC stream) or `parquet` (both with the report in
    /// their schema metadata).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the answer to this file instead of standard output.
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
    /// The same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// The forms `veil query` prints an answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
    Arrow,
    Parquet,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Start on a new temporary data directory loaded with the example departments, users and
    /// datasets, and print how to use it.
    #[arg(long, conflicts_with_all = ["data_dir", "import_root"])]
    demo: bool,
    /// The data directory (see `veil init`).
    #[arg(long, env = "VEIL_DATA_DIR", required_unless_present = "demo")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "VEIL_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Also serve Arrow Flight SQL (ADBC, pyarrow, JDBC tools) on this address, e.g.
    /// 127.0.0.1:7879. Off when not given.
    #[arg(long, env = "VEIL_FLIGHT_LISTEN")]
    flight_listen: Option<SocketAddr>,
    /// The directory holding the policy (`model.conf`, `policy.csv`); reloaded when they change.
    /// Default: the data directory's `policies/`.
    #[arg(long, env = "VEIL_POLICY_DIR", conflicts_with = "demo")]
    policy_dir: Option<PathBuf>,
    /// A directory stewards may import files from by relative path (JSON registration with
    /// `source`). Off when not given.
    #[arg(long, env = "VEIL_IMPORT_ROOT")]
    import_root: Option<PathBuf>,
    /// Largest dataset upload accepted, in MiB.
    #[arg(long, env = "VEIL_MAX_UPLOAD_MB", default_value_t = 4096)]
    max_upload_mb: usize,
    /// Memory one query may use before it spills to disk or fails, in MiB.
    #[arg(long, env = "VEIL_QUERY_MEMORY_MB", default_value_t = 1024)]
    query_memory_mb: usize,
    /// Memory all queries running at once may use together, in MiB: queries wait for room
    /// (within their deadline) beyond it.
    #[arg(long, env = "VEIL_QUERY_MEMORY_TOTAL_MB", default_value_t = 4096)]
    query_memory_total_mb: usize,
    /// Residents in the demo's person space.
    #[arg(long, default_value_t = 20_000)]
    demo_people: usize,
    /// On Ctrl-C or SIGTERM, how many seconds open connections get to finish their requests
    /// before they are closed (a second signal stops at once).
    #[arg(long, env = "VEIL_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
}

/// How to reach a server.
#[derive(Debug, Clone, Args)]
struct Remote {
    /// The server's base URL.
    #[arg(long, env = "VEIL_SERVER", default_value = "http://127.0.0.1:7878", global = true)]
    server: String,
    /// Bearer token (or set VEIL_TOKEN, or use --token-file).
    #[arg(long, env = "VEIL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DepartmentCommand {
    /// Create a department.
    Create {
        /// Id, which becomes the SQL schema (e.g. civil).
        id: String,
        /// Display name (e.g. 民政局).
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List departments.
    List(Remote),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        /// User id.
        id: String,
        /// Department (required for stewards and analysts).
        #[arg(long)]
        department: Option<String>,
        /// Role: admin, steward, analyst or auditor (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List users.
    List(Remote),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token for a user; it is printed once.
    Create {
        /// User id.
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token.
    Revoke {
        /// User id.
        user: String,
        /// Token id (from `token create`).
        token_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
enum AccessCommand {
    /// Ask for a mode on a dataset, with a purpose and an expiry; a deidentified request names
    /// its extract (--extract and --columns), which Veil builds at once for the steward.
    Request(Box<AccessRequestArgs>),
    /// List access requests: a steward's department's, an analyst's own, all for auditors.
    List {
        /// Only those in this state: pending, approved, rejected or revoked.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a pending request.
    Approve {
        /// The request's id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Reject a pending request, saying why.
    Reject {
        /// The request's id.
        id: String,
        /// Why, for the analyst and the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke an approved request, saying why; it stops working at once.
    Revoke {
        /// The request's id.
        id: String,
        /// Why, for the analyst and the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a pending extract stricter before deciding: Veil builds it again.
    Revise {
        /// The request's id.
        id: String,
        /// A higher k.
        #[arg(long)]
        k: Option<u64>,
        /// A higher l.
        #[arg(long)]
        l: Option<u64>,
        /// A lower largest share of suppressed records.
        #[arg(long)]
        max_suppression: Option<f64>,
        /// Why, for the analyst and the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// What the policy lets you do with a dataset, per mode, and why not.
    Check {
        /// department.name
        dataset: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
struct AccessRequestArgs {
    /// department.name
    dataset: String,
    /// aggregate, dp or deidentified.
    #[arg(long)]
    mode: String,
    /// Why (PIPL purpose limitation); the steward reads it.
    #[arg(long)]
    purpose: String,
    /// When the grant stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long)]
    expires: String,
    /// Deidentified: the extract's name (queried as extracts.<name>).
    #[arg(long)]
    extract: Option<String>,
    /// Deidentified: the columns to release, comma-separated (with --join, a column several
    /// datasets have as department.dataset.column).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Deidentified: other datasets (department.name, comma-separated) joined on their privacy
    /// units; each dataset's stewards approve their own part.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Deidentified: a k above the level's.
    #[arg(long)]
    k: Option<u64>,
    /// Deidentified: an l above the default.
    #[arg(long)]
    l: Option<u64>,
    /// Deidentified: the largest share of suppressed records.
    #[arg(long)]
    max_suppression: Option<f64>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Read the policy files again and put them in force.
    Reload(Remote),
}

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Draft a file's metadata from a sample of it, for review before registering: each
    /// column's type, a suggested tag and why, the privacy unit, observed bounds and a level.
    /// Reads the file here; nothing is sent or registered. The metadata goes to standard output,
    /// the reasons to standard error.
    Draft {
        /// The data file (CSV, spreadsheet, Arrow IPC or Parquet).
        file: PathBuf,
        /// The dataset's name.
        #[arg(long, default_value = "dataset")]
        name: String,
        /// The owning department.
        #[arg(long, default_value = "department")]
        department: String,
    },
    /// Register a dataset (or a new version): metadata JSON plus a data file to upload, or
    /// metadata with `source` naming a file under the server's import root.
    Register {
        /// Metadata JSON file.
        #[arg(long)]
        metadata: PathBuf,
        /// Data file to upload (CSV, a spreadsheet, Arrow IPC or Parquet).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Check the metadata and every row as a registration would, and store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List datasets (metadata only).
    List {
        /// Include retired datasets.
        #[arg(long)]
        include_retired: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one dataset's metadata.
    Show {
        /// department.name
        dataset: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retire a dataset.
    Retire {
        /// department.name
        dataset: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Logs to stderr at `VEIL_LOG`'s level (default `info`), as text (colour only on a terminal) or
/// JSON; other crates than Veil's at most warnings (`veil_server::logs`).
fn init_logs(format: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let levels = tracing_subscriber::EnvFilter::try_from_env("VEIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = veil_server::logs::layer(levels, format == "json", std::io::stderr, std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(layer).init();
}

fn main() -> ExitCode {
    quiet_on_closed_output();
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    // Planning and guarding a query recurse over its plan; 16 MiB stacks (address space, not
    // memory, until used) leave a wide margin over the nesting the parser admits.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(16 << 20).build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`veil query … | head -1`), as below.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `veil query … | head -1`: once the reader has gone, printing fails (Rust ignores SIGPIPE, so
/// `println!` panics) and the command would end with a panic message. Exit quietly instead, as
/// a command whose output nobody reads any more. (Restoring the default SIGPIPE action would need
/// `unsafe`, which the workspace forbids.)
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Errors of the command line: shown to a person, then the process exits non-zero.
type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Init { data_dir, admin_token_file, admin_id } => {
            let admin = veil_common::UserId::new(admin_id)?;
            veil_catalog::init(
                &data_dir,
                &admin_token_file,
                &admin,
                &serve::starting_policy(veil_policy::DEFAULT_POLICY),
            )?;
            println!(
                "initialised {}; admin `{admin}`'s token is in {}",
                data_dir.display(),
                admin_token_file.display()
            );
            Ok(())
        }
        Command::Serve(args) => serve::serve(args).await,
        Command::Department(cmd) => client::department(cmd).await,
        Command::User(cmd) => client::user(cmd).await,
        Command::Token(cmd) => client::token(cmd).await,
        Command::Dataset(cmd) => client::dataset(cmd).await,
        Command::Access(cmd) => client::access(cmd).await,
        Command::Policy(PolicyCommand::Reload(remote)) => client::policy_reload(remote).await,
        Command::Whoami(remote) => client::whoami(remote).await,
        Command::Query(args) => client::query(args).await,
        Command::Budget(remote) => client::budget(remote).await,
        Command::Walkthrough(args) => walkthrough::walkthrough(args).await,
        Command::Audit(AuditCommand::Search(args)) => client::audit_search(*args).await,
        Command::Audit(AuditCommand::Export(args)) => client::audit_export(*args).await,
        Command::Audit(AuditCommand::Verify { dir, public_key }) => {
            let key = veil_audit::PublicKey::read(&public_key)?;
            // A data directory (or a whole copy of one), or a copy of just its audit/.
            let dir = veil_catalog::DataDir::existing(&dir).map(|d| d.audit()).unwrap_or(dir);
            let report = tokio::task::spawn_blocking(move || veil_audit::verify(&dir, &key, None)).await??;
            println!("{report}");
            if report.ok() { Ok(()) } else { Err("the audit log does not verify".into()) }
        }
        Command::Audit(AuditCommand::PublicKey { data_dir }) => {
            let path = veil_catalog::DataDir::existing(&data_dir)?.audit_key();
            if !path.is_file() {
                return Err(format!(
                    "{} has no audit signing key yet; it is made when the server first starts",
                    data_dir.display()
                )
                .into());
            }
            println!("{}", veil_audit::SigningKey::load(&path)?.public_key().to_hex());
            Ok(())
        }
    }
}
