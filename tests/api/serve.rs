//! `tether serve` as a process: the flags that shape the process itself (not the service).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

/// Kills the server when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tether serve --workers N` on port 0 with a data directory in `dir`.
fn serve_with_workers(dir: &tempfile::TempDir, workers: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    command.args(["serve", "--workers", workers, "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    command
}

#[test]
fn serve_runs_the_number_of_worker_threads_asked_for_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Three: unlike one or two, not what one-per-CPU gives on the machines this runs on.
    let child = serve_with_workers(&dir, "3")
        .env("TETHER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether serve");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
    let mut stderr = running.0.stderr.take().expect("stderr");
    let address = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("tether listening on http://").map(str::to_owned))
        .expect("the listening line");
    let mut connection = std::net::TcpStream::connect(&address).expect("connect");
    connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    connection.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The log says how many workers the runtime has; read it once the process has ended, so a
    // missing line fails the test instead of blocking it.
    drop(running);
    let mut log = String::new();
    stderr.read_to_string(&mut log).expect("read the log");
    let listening = log.lines().find(|line| line.contains("tether listening")).expect("the listening log line");
    assert!(listening.contains("workers=3"), "{listening}");
}

#[test]
fn serve_refuses_zero_worker_threads_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = serve_with_workers(&dir, "0").output().expect("run tether serve");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--workers"), "{output:?}");
}

#[test]
fn serve_refuses_a_read_replica_without_a_postgresql_primary() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, env) in [
        (vec!["--read-database", "postgres://tether@127.0.0.1:1/replica"], None),
        (vec![], Some("postgres://tether@127.0.0.1:1/replica")),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).args(&flags);
        command.env_remove("TETHER_DATABASE_URL").env_remove("TETHER_READ_DATABASE_URL");
        if let Some(url) = env {
            command.env("TETHER_READ_DATABASE_URL", url);
        }
        let output = command.output().expect("run tether serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
        assert!(stderr.contains("--database"), "names the flag it needs: {stderr}");
    }
    assert!(!tether::store::database_path(dir.path()).exists(), "nothing was created");
}
