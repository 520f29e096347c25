//! The services as Hubble's clients see them: health, ServerStatus, GetNodes, GetNamespaces, Peer
//! Notify, the version header, and GetFlows argument checks.

use imdsguard_hubble_proto::flow::{Endpoint, Flow};
use imdsguard_hubble_proto::observer::observer_client::ObserverClient;
use imdsguard_hubble_proto::observer::{
    GetFlowsRequest, GetNamespacesRequest, GetNodesRequest, ServerStatusRequest,
};
use imdsguard_hubble_proto::peer::peer_client::PeerClient;
use imdsguard_hubble_proto::peer::{ChangeNotificationType, NotifyRequest};
use imdsguard_hubble_server::server::{HUBBLE_API_VERSION, Hub, OBSERVER_SERVICE_NAME, router};
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn start() -> (std::sync::Arc<Hub>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("address"));
    let hub = Hub::new(15, "node-a", addr.clone());
    let r = router(hub.clone()).await;
    tokio::spawn(async move {
        r.serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    (hub, addr)
}

fn pod(ns: &str) -> Option<Endpoint> {
    Some(Endpoint {
        namespace: ns.into(),
        pod_name: "p".into(),
        identity: 300,
        ..Default::default()
    })
}

#[tokio::test]
async fn what_hubble_status_and_list_ask() {
    let (hub, addr) = start().await;
    for ns in ["logging", "go-webapp", "logging"] {
        hub.ingest(Flow {
            source: pod(ns),
            destination: pod("kube-system"),
            ..Default::default()
        });
    }
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let h = health
        .check(HealthCheckRequest {
            service: OBSERVER_SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, ServingStatus::Serving as i32);

    let mut obs = ObserverClient::connect(addr.clone()).await.unwrap();
    let status = obs.server_status(ServerStatusRequest {}).await.unwrap();
    assert_eq!(
        status
            .metadata()
            .get("hubble-server-version")
            .and_then(|v| v.to_str().ok()),
        Some(HUBBLE_API_VERSION)
    );
    let status = status.into_inner();
    assert_eq!(
        (status.num_flows, status.max_flows, status.seen_flows),
        (3, 15, 3)
    );
    assert!(status.num_connected_nodes.is_none());

    let nodes = obs
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].name, "node-a");

    let ns = obs
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = ns.namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(names, ["go-webapp", "kube-system", "logging"]);

    let mut peer = PeerClient::connect(addr.clone()).await.unwrap();
    let mut notes = peer.notify(NotifyRequest {}).await.unwrap().into_inner();
    let first = notes.message().await.unwrap().unwrap();
    assert_eq!(first.name, "node-a");
    assert_eq!(first.r#type, ChangeNotificationType::PeerAdded as i32);
}

#[tokio::test]
async fn get_flows_rejects_bad_requests_and_reports_losses() {
    let (hub, addr) = start().await;
    let mut obs = ObserverClient::connect(addr).await.unwrap();
    let err = obs
        .get_flows(GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("first cannot be specified with follow")
    );

    // A follower that falls more than a ring behind is told how many flows it lost.
    let mut stream = obs
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    hub.ingest(Flow {
        uuid: "0".into(),
        ..Default::default()
    });
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.response_types.is_some());
    let mut seen_lost = false;
    for i in 1..2000 {
        hub.ingest(Flow {
            uuid: i.to_string(),
            ..Default::default()
        });
    }
    while let Ok(Some(resp)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), stream.message())
            .await
            .map(|r| r.unwrap())
    {
        use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
        match resp.response_types {
            Some(ResponseTypes::LostEvents(l)) => {
                assert!(l.num_events_lost > 0);
                seen_lost = true;
            }
            Some(ResponseTypes::Flow(f)) if f.uuid == "1999" => break,
            _ => {}
        }
    }
    assert!(
        seen_lost,
        "a reader 1999 flows behind a 15-flow ring must see a LostEvents"
    );
}

#[tokio::test]
async fn the_client_prints_what_get_flows_streams() {
    use imdsguard_flow::observe::{Observe, ObserveOptions};
    use imdsguard_hubble_server::client::{ClientError, ClientOptions};

    let (hub, addr) = start().await;
    hub.ingest(Flow {
        source: pod("a"),
        destination: pod("b"),
        ..Default::default()
    });
    let opts = ObserveOptions {
        output: "json".into(),
        all: true,
        ..Default::default()
    };
    let now = imdsguard_hubble_proto::wkt::Timestamp::now();
    let mut observe = Observe::new(&opts, vec![], vec![], now).unwrap();
    let req = observe.request().unwrap();
    let mut out = Vec::new();
    ClientOptions::new(addr.trim_start_matches("http://"))
        .print_flows(req, observe.printer(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(r#""namespace":"a""#), "{text}");

    let err = ClientOptions::new("unix:///nonexistent/hubble.sock")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unix { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "connecting to unix:///nonexistent/hubble.sock"
    );
}
