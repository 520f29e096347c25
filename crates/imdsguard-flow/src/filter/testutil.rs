//! Builders of flows and filters for the tests of every criterion.

pub(super) use super::{FilterError, FlowFilters};
pub(super) use crate::flow::{
    CiliumEventType, Dns, Endpoint, EventTypeFilter, Flow, FlowFilter, FlowType, Http, HttpHeader,
    Ip, IpTraceId, Layer4, Layer7, Service, Tcp, TcpFlags, TraceContext, TraceParent, Udp,
    Workload, flow_filter::Experimental, layer4, layer7,
};

pub(super) fn ff() -> FlowFilter {
    FlowFilter::default()
}

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

pub(super) fn ep(ns: &str, pod: &str) -> Option<Endpoint> {
    Some(Endpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        ..Default::default()
    })
}

pub(super) fn labeled(labels: &[&str]) -> Option<Endpoint> {
    Some(Endpoint {
        labels: s(labels),
        ..Default::default()
    })
}

pub(super) fn tcp(src: u32, dst: u32, flags: Option<TcpFlags>) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(layer4::Protocol::Tcp(Tcp {
            source_port: src,
            destination_port: dst,
            flags,
        })),
    })
}

pub(super) fn ip(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ..Default::default()
    })
}

pub(super) fn http_flow(method: &str, url: &str, code: u32) -> Flow {
    Flow {
        r#type: FlowType::L7 as i32,
        l7: Some(Layer7 {
            record: Some(layer7::Record::Http(Http {
                code,
                method: method.into(),
                url: url.into(),
                headers: vec![HttpHeader {
                    key: "x-a".into(),
                    value: "1".into(),
                }],
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds `filter` as the only whitelist filter and checks each flow.
#[track_caller]
pub(super) fn check(filter: FlowFilter, cases: &[(Flow, bool)]) {
    let fs = FlowFilters::new(&[filter], &[]).expect("filter builds");
    for (i, (flow, want)) in cases.iter().enumerate() {
        assert_eq!(fs.matches(flow), *want, "case {i}: {flow:?}");
    }
}

#[track_caller]
pub(super) fn build_err(filter: FlowFilter) -> FilterError {
    FlowFilters::new(&[filter], &[]).expect_err("filter must be rejected")
}
