//! The bridge runs on a caller-bound loopback listener, reports its status, and stops on request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use kathon_bridge::{Config, Listeners, run};
use tokio::net::TcpListener;

#[tokio::test]
async fn serves_status_and_shuts_down_gracefully() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config { machine_name: "test box".into(), ..Config::default() };
    let server = tokio::spawn(run(Listeners { local: listener, relay: None }, config, async {
        let _ = stopped.await;
    }));
    let status: serde_json::Value = reqwest::get(format!("http://{addr}/status")).await.unwrap().json().await.unwrap();
    assert_eq!(status["machine_name"], "test box");
    assert_eq!(status["listen"], addr.to_string());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback() {
    // Bind a non-loopback wildcard; the bridge must refuse before serving anything.
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = run(Listeners { local: listener, relay: None }, Config::default(), async {}).await.unwrap_err();
    assert!(err.to_string().contains("loopback only"));
}
