//! The routes and their answers, through the router as the kubelet and Prometheus reach it.
//! No IO: requests are handed to the router in memory.

use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::Service as _;

use super::*;

fn state(ready: bool) -> ServerState {
    ServerState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(ready)),
    }
}

/// Status, content type and body of `GET path`.
async fn get(state: ServerState, path: &str) -> (StatusCode, Option<String>, String) {
    let mut router = router(state);
    std::future::poll_fn(|context| {
        tower::Service::<axum::http::Request<Body>>::poll_ready(&mut router, context)
    })
    .await
    .expect("the router is always ready");
    let response = router
        .call(
            axum::http::Request::get(path)
                .body(Body::empty())
                .expect("request builds"),
        )
        .await
        .expect("the router never fails");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    )
}

#[tokio::test]
async fn healthz_is_ok_before_the_caches_sync() {
    let (status, _, body) = get(state(false), "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn readyz_answers_once_the_caches_have_synced() {
    let (status, _, body) = get(state(false), "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    );
    let (status, _, body) = get(state(true), "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_text() {
    let state = state(true);
    state.metrics.leader.set(1);
    let (status, content_type, body) = get(state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(OPENMETRICS));
    assert!(body.contains("invoiceops_leader 1"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let (status, _, _) = get(state(true), "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
