//! The controller measured through a `MetricsSource` trait object fed with recorded answers:
//! the same path the production Prometheus client takes, without a Prometheus.

use std::collections::HashMap;

use super::*;
use crate::prometheus::{QueryKind, Recorded, Series};

#[tokio::test]
async fn the_fleet_tick_measures_every_service_through_its_metrics_source() {
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let (services, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(service.clone()));
    let profile = MetricProfile::default();
    let five_minutes = Duration::from_secs(300);
    let query = FleetQuery::for_services(
        [&service.spec],
        Duration::from_secs(60),
        Duration::from_secs(120),
    );
    let rates_query = query
        .plan(&profile)
        .into_iter()
        .find(|planned| planned.kind == QueryKind::ServiceRates(five_minutes))
        .expect("the default burn-rate windows include 5m")
        .promql;
    let series = |class: &str, value: f64| Series {
        labels: HashMap::from([
            ("namespace".to_owned(), "invoicing".to_owned()),
            ("service".to_owned(), "invoice-api".to_owned()),
            ("invoiceops_class".to_owned(), class.to_owned()),
        ]),
        timestamp: 1.0e9,
        value,
    };
    let mut recorded = Recorded::new(profile);
    recorded.answer(
        rates_query,
        Ok(vec![series("2xx", 8.0), series("5xx", 2.0)]),
    );
    let (client, _server) = api_server();
    let context = Arc::new(Context::test_measured_by(
        client,
        Arc::new(recorded),
        Caches::with_pods([]),
    ));
    assert!(measure(&context, &service).await.is_none(), "no tick yet");

    evaluate_fleet(&context, &services).await;

    let (metrics, failed_in_a_row) = measure(&context, &service).await.unwrap();
    assert_eq!(failed_in_a_row, 0);
    let rates = metrics.rates(five_minutes).unwrap();
    assert_eq!((rates.total, rates.server_errors), (10.0, 2.0));
}
