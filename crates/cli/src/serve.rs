//! `veil serve` and `veil serve --demo`.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use veil_catalog::{Catalog, DatasetSpec, Transition};
use veil_common::{DepartmentId, Role, UserId};
use veil_policy::PolicyFiles;
use veil_server::{AppState, ServerConfig};

use crate::{CliResult, ServeArgs};

/// The files a new data directory starts with: the model and the given policy.
pub(crate) fn starting_policy(policy: &'static str) -> [(&'static str, &'static str); 2] {
    [("policies/model.conf", veil_policy::DEFAULT_MODEL), ("policies/policy.csv", policy)]
}

/// Builds the server state: the catalogue, the policy (with memberships and grants from it), and
/// the audit log.
fn state(catalog: Catalog, policy_dir: &Path, config: ServerConfig) -> CliResult<AppState> {
    let files = PolicyFiles::in_dir(policy_dir);
    let policy = veil_server::load_policy(&catalog, files)
        .map_err(|e| format!("loading the policy from {}: {e}", policy_dir.display()))?;
    Ok(AppState::new(catalog, config, policy)?)
}

pub(crate) async fn serve(args: ServeArgs) -> CliResult {
    if args.demo {
        return serve_demo(args).await;
    }
    let Some(data_dir) = args.data_dir.as_deref() else {
        return Err("--data-dir is required (or use --demo)".into());
    };
    if let Some(root) = &args.import_root
        && !root.is_dir()
    {
        return Err(format!("--import-root {} is not a directory", root.display()).into());
    }
    let query = query_limits(&args)?;
    let catalog = open_catalog(data_dir).await?;
    let config = ServerConfig {
        import_root: args.import_root.clone(),
        max_upload_bytes: args.max_upload_mb.saturating_mul(1024 * 1024),
        query,
        audit: veil_audit::Options::default(),
    };
    let policy_dir = args.policy_dir.clone().unwrap_or_else(|| data_dir.join("policies"));
    let state = state(catalog, &policy_dir, config)?;
    let shutdown = shutdown_signal(args.shutdown_grace)?;
    veil_server::raise_descriptor_limit();
    let listener =
        TcpListener::bind(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Veil is listening on http://{addr} (data directory {})", data_dir.display());
    let flight = flight_listener(&args).await?;
    tracing::info!(%addr, policy = %policy_dir.display(), "serving");
    veil_server::run(listener, flight, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds `--flight-listen`, if given, and says where Flight SQL clients connect.
async fn flight_listener(args: &ServeArgs) -> CliResult<Option<TcpListener>> {
    let Some(addr) = args.flight_listen else { return Ok(None) };
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} for Flight SQL: {e}"))?;
    println!("Flight SQL is listening on grpc://{}", listener.local_addr()?);
    Ok(Some(listener))
}

async fn open_catalog(dir: &Path) -> CliResult<Catalog> {
    let dir = dir.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || Catalog::open(&dir)).await??)
}

/// Installs the SIGINT and SIGTERM handlers now, and returns when to stop: the first signal
/// begins a graceful shutdown of at most `grace_seconds`, a second one stops waiting.
/// Installing before the address is announced means a signal sent as soon as the server says it
/// is listening still shuts it down gracefully, rather than killing it.
fn shutdown_signal(
    grace_seconds: u64,
) -> std::io::Result<veil_server::Stop<impl Future<Output = ()> + use<>, impl Future<Output = ()> + use<>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (count, signals) = tokio::sync::watch::channel(0_u8);
    tokio::spawn(async move {
        for n in 1..=2 {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            if n == 1 {
                tracing::info!(
                    grace_seconds,
                    "shutting down: finishing requests in flight (a second signal stops now)"
                );
            }
            count.send_replace(n);
        }
    });
    let nth = |n: u8| {
        let mut signals = signals.clone();
        async move {
            // An error means the handler task is gone, which only the runtime's end does.
            let _ = signals.wait_for(|count| *count >= n).await;
        }
    };
    Ok(veil_server::Stop { begin: nth(1), now: nth(2), grace: std::time::Duration::from_secs(grace_seconds) })
}

/// The demo's users and their tokens, in creation order.
pub(crate) struct DemoSetup {
    tokens: Vec<(String, String)>,
    /// The demo's data directory.
    pub(crate) data_dir: PathBuf,
}

impl DemoSetup {
    /// A demo user's token.
    pub(crate) fn token(&self, user: &str) -> Option<&str> {
        self.tokens.iter().find(|(u, _)| u == user).map(|(_, t)| t.as_str())
    }
}

/// Builds the demo data directory: departments, users with tokens, and the four datasets
/// registered by their stewards through the same path as an upload.
pub(crate) fn build_demo(root: &Path, people: usize) -> CliResult<(Catalog, DemoSetup)> {
    let data_dir = root.join("data");
    let admin_token_file = root.join("admin.token");
    let admin = UserId::new("admin")?;
    veil_catalog::init(&data_dir, &admin_token_file, &admin, &starting_policy(veil_policy::DEMO_POLICY))?;
    let catalog = Catalog::open(&data_dir)?;
    let mut tokens = vec![("admin".to_owned(), std::fs::read_to_string(&admin_token_file)?.trim().to_owned())];
    for (id, name) in veil_demo::DEPARTMENTS {
        catalog.create_department(&DepartmentId::new(id)?, name)?;
    }
    for (id, department, roles) in veil_demo::USERS {
        let user = UserId::new(id)?;
        let department = department.map(DepartmentId::new).transpose()?;
        let roles = roles.iter().map(|r| r.parse::<Role>()).collect::<Result<Vec<_>, _>>()?;
        catalog.create_user(&user, department.as_ref(), &roles)?;
        tokens.push((id.to_owned(), catalog.issue_token(&user)?.token));
    }
    for dataset in veil_demo::generate(veil_demo::DEMO_SEED, people)? {
        let csv = root.join(format!("{}.{}.csv", dataset.department, dataset.name));
        veil_demo::write_csv(&dataset.batch, &csv)?;
        let metadata: veil_server::dto::DatasetMetadata = serde_json::from_value(dataset.metadata)?;
        let spec = DatasetSpec::validate(metadata.into())?;
        let steward = UserId::new(format!("{}-steward", dataset.department))?;
        // The demo is set up before its server exists: these registrations are not in its log.
        let (info, _) = catalog.register_dataset(&spec, &csv, &steward, |_, _| None, &|_| {})?;
        std::fs::remove_file(&csv)?;
        tracing::info!(dataset = %info.dataset, rows = info.row_count, "demo dataset registered");
    }
    Ok((catalog, DemoSetup { tokens, data_dir }))
}

/// An approved de-identified extract of `health.visits` for the health analyst, asked for and
/// built on the same path as any request, so the demo's de-identified query works at once.
async fn demo_extract(state: &AppState, setup: &DemoSetup) -> CliResult {
    let token = setup.token("health-analyst").ok_or("the demo has no health analyst")?;
    let principal = state.catalog.authenticate(token)?.ok_or("the demo analyst's token is not accepted")?;
    let department = principal.department.clone().ok_or("the demo analyst has no department")?;
    let expires_at = (time::OffsetDateTime::now_utc() + time::Duration::days(30)).unix_timestamp();
    let request = veil_broker::ExtractRequest {
        dataset: "health.visits".parse()?,
        join: Vec::new(),
        purpose: "演示: 门诊就诊的去标识化提取 (demo extract of clinic visits)".into(),
        expires_at,
        name: "visits".into(),
        columns: ["person_id", "visit_date", "district", "icd10", "cost"].map(String::from).to_vec(),
        hierarchies: Vec::new(),
        k: None,
        l: None,
        max_suppression: None,
    };
    let caller = veil_broker::Caller { principal, request_id: None };
    let (request, extract, _) = state.broker.request_extract(&caller, department, request, |_, _| None).await?;
    state.catalog.decide_access_request(&request.id, &UserId::new("health-steward")?, Transition::Approve, |_| None)?;
    tracing::info!(rows = extract.rows, "demo extract built and approved");
    Ok(())
}

/// The query limits `args` ask for: the standard ones with their memory.
fn query_limits(args: &ServeArgs) -> CliResult<veil_query::Limits> {
    let (one, all) = (args.query_memory_mb, args.query_memory_total_mb);
    if one < 16 {
        return Err(format!("--query-memory-mb {one}: a query needs at least 16 MiB").into());
    }
    if all < one {
        return Err(format!("--query-memory-total-mb {all} is less than one query's --query-memory-mb {one}").into());
    }
    Ok(veil_query::Limits {
        memory_bytes: one.saturating_mul(1 << 20),
        total_memory_bytes: all.saturating_mul(1 << 20),
        ..veil_query::Limits::standard()
    })
}

/// The server state over a demo made by [`build_demo`].
pub(crate) fn demo_state(
    catalog: Catalog,
    setup: &DemoSetup,
    max_upload_mb: usize,
    query: veil_query::Limits,
) -> CliResult<AppState> {
    let config = ServerConfig {
        import_root: None,
        max_upload_bytes: max_upload_mb.saturating_mul(1024 * 1024),
        query,
        audit: veil_audit::Options::default(),
    };
    state(catalog, &setup.data_dir.join("policies"), config)
}

async fn serve_demo(args: ServeArgs) -> CliResult {
    let tmp = tempfile::Builder::new().prefix("veil-demo-").tempdir()?;
    let root = tmp.path().to_path_buf();
    let people = args.demo_people;
    let (catalog, setup) = tokio::task::spawn_blocking(move || build_demo(&root, people)).await??;
    let shutdown = shutdown_signal(args.shutdown_grace)?;
    let listener =
        TcpListener::bind(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    println!("Veil demo is listening on {url}");
    let flight = flight_listener(&args).await?;
    println!("Data directory (temporary, removed when the demo stops): {}", setup.data_dir.display());
    println!();
    println!("Departments: civil (民政), health (卫健), hrss (人社), hotline (12345)");
    println!("Datasets:    civil.elderly (L3), health.visits (L4), hrss.social_insurance (L3), hotline.tickets (L2)");
    println!();
    println!("Tokens (one per demo user):");
    for (user, token) in &setup.tokens {
        println!("  token {user:<16} {token}");
    }
    let analyst = setup.token("health-analyst").unwrap_or("");
    println!();
    println!("First things to try, as the health analyst:");
    println!("  export VEIL_SERVER={url} VEIL_TOKEN={analyst}");
    // Started with `cargo run`, `veil` is not on the PATH: name this program so the lines below
    // work as they are.
    if let Ok(exe) = std::env::current_exe() {
        println!("  alias veil='{}'   # this program, where veil is not on your PATH", exe.display());
    }
    println!("  veil dataset list");
    println!(
        "  veil query \"SELECT district, category, count(*) AS tickets FROM hotline.tickets GROUP BY district, category ORDER BY tickets DESC LIMIT 10\""
    );
    println!(
        "  veil query \"SELECT district, icd10, count(DISTINCT person_id) AS people FROM health.visits GROUP BY district, icd10\""
    );
    println!(
        "  veil query --mode deidentified \"SELECT * FROM extracts.visits LIMIT 5\"   # an approved de-identified extract"
    );
    println!(
        "  veil query --mode dp --epsilon 0.5 \"SELECT district, count(*) AS elderly, avg(monthly_subsidy) AS subsidy FROM civil.elderly WHERE living_alone GROUP BY district\""
    );
    println!("  veil budget                                          # epsilon spent and left per dataset");
    println!("  veil query \"SELECT person_id FROM health.visits\"      # refused: identifiers never leave");
    println!("  curl -s -H \"Authorization: Bearer $VEIL_TOKEN\" $VEIL_SERVER/v1/query \\");
    println!(
        "       -d '{{\"sql\": \"SELECT count(*) FROM hotline.tickets\", \"mode\": \"aggregate\"}}' -H 'content-type: application/json'"
    );
    let auditor = setup.token("auditor").unwrap_or("");
    println!();
    println!("Every query above is in the tamper-evident audit log. As the auditor:");
    println!("  export VEIL_TOKEN={auditor}");
    println!("  veil audit search --action query");
    println!(
        "  veil query \"SELECT \\\"user\\\", decision, rule, count(*) AS n FROM audit.events WHERE action = 'query' GROUP BY 1, 2, 3\""
    );
    println!("  curl -s -H \"Authorization: Bearer $VEIL_TOKEN\" $VEIL_SERVER/v1/audit/verify");
    println!();
    println!("The scenarios under examples/ (hotline-trends, elderly-care, new-employment, subsidy-audit)");
    println!("follow this data step by step; each README says what to run, or play one whole with");
    println!("  veil walkthrough examples/elderly-care");
    println!();
    println!("The API is described at {url}/v1/docs ({url}/v1/openapi.json). Stop with Ctrl-C.");
    let state = demo_state(catalog, &setup, args.max_upload_mb, query_limits(&args)?)?;
    // With few people the extract may meet no k: the rest of the demo still works.
    if let Err(e) = demo_extract(&state, &setup).await {
        eprintln!(
            "note: the demo's de-identified extract of health.visits was not built ({e}); with --demo-people {} too few people share each class",
            args.demo_people
        );
    }
    veil_server::run(listener, flight, state, shutdown).await?;
    drop(tmp);
    Ok(())
}
