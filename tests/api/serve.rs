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

#[test]
fn serve_with_one_worker_thread_answers_requests() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--workers", "1", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tether serve");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
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
}

#[test]
fn serve_refuses_zero_worker_threads_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--workers", "0", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run tether serve");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--workers"), "{output:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created");
}
