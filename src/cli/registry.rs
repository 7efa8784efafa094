//! `imgforge registry serve`: the registry's read-only HTTP API and page.

use anyhow::Context;

/// Arguments of `imgforge registry`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry: a SQLite file, `sqlite:PATH` or `postgres://…` (default:
    /// $IMGFORGE_REGISTRY or /var/lib/imgforge/registry.db).
    #[arg(long, global = true)]
    pub registry: Option<String>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Serve GET /api/v1/images[?…], /api/v1/images/ID and an HTML page with the lineage tree.
    Serve {
        /// Address to listen on (port 0: any free port, printed on start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

/// Runs `imgforge registry`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let Sub::Serve { listen } = &a.command;
    // Opened before the runtime exists: the PostgreSQL client runs a runtime of its own.
    let store = crate::registry::open(a.registry.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("Failed to start the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen.as_str()).await.with_context(|| format!("Failed to listen on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!("imgforge: serving the registry on http://{addr}/ (API: http://{addr}/api/v1/images)");
        crate::registry::api::serve(listener, store).await
    })
}
