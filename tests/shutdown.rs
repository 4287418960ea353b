//! Graceful shutdown of the real binary: SIGTERM during a slow request lets
//! it complete, then the process exits 0.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    let backend = Backend::start(Duration::from_millis(1500), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"slow answer"))
    })
    .await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("upstream: {{ url: \"{}\" }}\n", backend.url());
    let config = binary_config(&dir, port, admin, "", &upstream);
    let mut child = start_binary(&config, admin, &[], &[], Stdio::null()).await;
    let request =
        tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/slow"), &[]).await });
    eventually("request reached the backend", || async {
        backend.hits() == 1
    })
    .await;
    signal(&child, "TERM");
    // New connections are refused at once, while the request in flight is
    // still being answered (the backend takes 1.5 s).
    eventually("the listener closed", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(
        !request.is_finished(),
        "the listener closed only after the request in flight"
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
}
