//! Graceful shutdown of the real binary: SIGTERM during a slow request lets
//! it complete, then the process exits 0.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    let backend = Backend::start(Duration::from_millis(1500), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"slow answer"))
    })
    .await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecache.yaml");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{port}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nupstream: {{ url: \"{}\" }}\n", backend.url()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("proxy ready", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
    })
    .await;
    let request =
        tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/slow"), &[]).await });
    eventually("request reached the backend", || async {
        backend.hits() == 1
    })
    .await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let res = request.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "slow answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sidecache did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    // New connections are refused once it has stopped.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
