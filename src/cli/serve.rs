//! `tether serve`: taking the data directory, binding, serving until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tether::domain::{Error, PublicUrl};
use tether::instance_lock::{InstanceLock, LockError};
use tether::{App, Config};

/// The exit code of a `serve` that did not get its data directory (another instance holds it).
pub(super) const DATA_DIR_IN_USE: u8 = 3;

/// Takes the data directory for this process, waiting up to `wait` for a running instance to
/// exit, with progress on stderr.
pub(super) async fn lock_data_dir(dir: &std::path::Path, wait: Duration) -> Result<InstanceLock, LockError> {
    let dir = dir.to_owned();
    let waiting = move || {
        if wait.is_zero() {
            return InstanceLock::acquire(&dir);
        }
        let mut told = false;
        let lock = InstanceLock::acquire_waiting(&dir, wait, Duration::from_secs(5), |w| {
            let holder = w.holder.as_ref().map_or_else(|| "its holder".to_owned(), |h| h.to_string());
            if told {
                eprintln!("still waiting for {} ({:.0?} of {:.0?})", w.dir.display(), w.waited, w.limit);
            } else {
                eprintln!("waiting up to {:.0?} for {} to be released by {holder}", w.limit, w.dir.display());
                told = true;
            }
        })?;
        if told {
            eprintln!("took over {}", dir.display());
        }
        Ok(lock)
    };
    match tokio::task::spawn_blocking(waiting).await {
        Ok(outcome) => outcome,
        Err(e) => Err(LockError::Io { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) }),
    }
}

/// Binds `listen`, opens the app and serves until Ctrl-C or SIGTERM; the data directory stays
/// locked until nothing more is answered or written.
pub(super) async fn serve(
    mut config: Config,
    listen: &str,
    public_url: Option<PublicUrl>,
    mut lock: Option<InstanceLock>,
) -> Result<ExitCode, Error> {
    let locked_at = Instant::now();
    // Bound before the app opens, so the default public URL can name the port the OS picked;
    // connections wait in the backlog until the app serves them.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(Error::internal)?;
    config.public_url = public_url.unwrap_or_else(|| PublicUrl::for_listener(addr));
    let app = App::open(&config).await?;
    if let Some(credential) = &app.first_admin_credential {
        println!("First start: created {} with an admin credential.", config.data_dir.display());
        println!("Admin credential (shown once; also in {}):", config.data_dir.join("admin.credential").display());
        println!("{credential}");
    }
    if let Some(lock) = lock.as_mut() {
        lock.set_listening(&addr.to_string()).map_err(Error::internal)?;
    }
    let ready_ms = locked_at.elapsed().as_millis();
    // On stdout, so scripts that start tether on port 0 can read where it listens.
    println!("tether listening on http://{addr}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%addr, data_dir = %config.data_dir.display(), workers, ready_ms, "tether listening");
    app.serve(listener, shutdown_signal()).await.map_err(Error::internal)?;
    tracing::info!("tether stopped");
    // Held until here: the directory is released only once nothing more is answered or written.
    drop(app);
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
