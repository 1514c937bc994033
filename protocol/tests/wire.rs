//! Pins the wire format. If one of the byte snapshots changes, the change
//! breaks every deployed agent: add a new variant instead.

use dibop_protocol::*;
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sample_request() -> CallRequest {
    CallRequest {
        call_id: 42,
        method: "GET".into(),
        url: "http://dms.local/v1/vehicles".into(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms: 5000,
    }
}

#[test]
fn hello_bytes_are_pinned() {
    let frame = encode_frame(&AgentToControl::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent_version: "0.1.0".into(),
        hostname: "dealer-1".into(),
    }))
    .unwrap();
    assert_eq!(hex(&frame), "0000001200010105302e312e30086465616c65722d31");
}

#[test]
fn heartbeat_bytes_are_pinned() {
    let frame = encode_frame(&AgentToControl::Heartbeat(Heartbeat {
        seq: 300,
        in_flight: 3,
    }))
    .unwrap();
    assert_eq!(hex(&frame), "0000000402ac0203");
}

#[test]
fn call_request_bytes_are_pinned() {
    let frame = encode_frame(&ControlToAgent::Call(sample_request())).unwrap();
    assert_eq!(
        hex(&frame),
        "0000003f052a034745541c687474703a2f2f646d732e6c6f63616c2f76312f76656869636c657301066163636570\
         74106170706c69636174696f6e2f6a736f6e008827"
    );
}

/// Protocol 3's liveness messages: appended variants, pinned like the rest.
#[test]
fn liveness_bytes_are_pinned() {
    let accepted = encode_frame(&AgentToControl::Accepted(CallAccepted { call_id: 42 })).unwrap();
    assert_eq!(hex(&accepted), "00000002062a");
    let pong = encode_frame(&AgentToControl::Pong(300)).unwrap();
    assert_eq!(hex(&pong), "0000000307ac02");
    let ping = encode_frame(&ControlToAgent::Ping(300)).unwrap();
    assert_eq!(hex(&ping), "0000000307ac02");
    // The error classes decided by the control plane come after the others.
    let classes = [ErrorClass::CircuitOpen, ErrorClass::Throttled];
    let bytes: Vec<u8> = classes
        .iter()
        .flat_map(|c| postcard::to_allocvec(c).unwrap())
        .collect();
    assert_eq!(hex(&bytes), "0c0d");
}

#[test]
fn rejection_bytes_are_pinned() {
    let frame = encode_frame(&ControlToAgent::Rejected(Rejection {
        code: RejectCode::Revoked,
        message: "revoked".into(),
    }))
    .unwrap();
    assert_eq!(hex(&frame), "0000000a0102077265766f6b6564");
}

#[test]
fn call_result_bytes_are_pinned() {
    let result = CallResult {
        call_id: 42,
        ok: true,
        method: "GET".into(),
        url: "http://x/".into(),
        status: Some(200),
        status_text: Some("OK".into()),
        headers: vec![("content-type".into(), "application/json".into())],
        body: ResponseBody::Json("{\"a\":1}".into()),
        parse_error: None,
        timing: Timing {
            total_us: 1500,
            headers_us: 900,
        },
        attempts: 1,
        agent_id: "agt_1".into(),
        error: None,
    };
    let frame = encode_frame(&AgentToControl::CallResult(result)).unwrap();
    assert_eq!(
        hex(&frame),
        "0000004d042a010347455409687474703a2f2f782f01c80101024f4b010c636f6e74656e742d74797065106170706c\
         69636174696f6e2f6a736f6e01077b2261223a317d00dc0b840701056167745f3100"
    );
}

fn arb_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[a-z-]{1,20}", ".{0,40}"), 0..8)
}

fn arb_class() -> impl Strategy<Value = ErrorClass> {
    prop_oneof![
        Just(ErrorClass::AuthFailure),
        Just(ErrorClass::Timeout),
        Just(ErrorClass::NetworkError),
        Just(ErrorClass::TlsError),
        Just(ErrorClass::PolicyDenied),
        Just(ErrorClass::AgentUnavailable),
        Just(ErrorClass::RateLimited),
        Just(ErrorClass::UpstreamError),
        Just(ErrorClass::Cancelled),
    ]
}

fn arb_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        Just(ResponseBody::Empty),
        ".{0,100}".prop_map(ResponseBody::Json),
        ".{0,100}".prop_map(ResponseBody::Text),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(ResponseBody::Binary),
    ]
}

prop_compose! {
    fn arb_result()(
        call_id in any::<u64>(), ok in any::<bool>(), method in "[A-Z]{3,7}", url in ".{0,80}",
        status in proptest::option::of(100u16..600), status_text in proptest::option::of(".{0,20}"),
        headers in arb_headers(), body in arb_body(), parse_error in proptest::option::of(".{0,30}"),
        total_us in any::<u64>(), headers_us in any::<u64>(), attempts in 0u32..10, agent_id in "[a-z0-9_]{0,20}",
        error in proptest::option::of((arb_class(), ".{0,40}")),
    ) -> CallResult {
        CallResult {
            call_id, ok, method, url, status, status_text, headers, body, parse_error,
            timing: Timing { total_us, headers_us }, attempts, agent_id,
            error: error.map(|(class, message)| CallError { class, message }),
        }
    }
}

prop_compose! {
    fn arb_request()(
        call_id in any::<u64>(), method in "[A-Z]{3,7}", url in ".{0,80}", headers in arb_headers(),
        body in proptest::collection::vec(any::<u8>(), 0..300), timeout_ms in any::<u32>(),
    ) -> CallRequest {
        CallRequest { call_id, method, url, headers, body, timeout_ms }
    }
}

fn round_trip<T>(message: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let frame = encode_frame(message).unwrap();
    match decode_frame::<T>(&frame).unwrap() {
        Decoded::Frame { message, consumed } => {
            assert_eq!(consumed, frame.len());
            message
        }
        Decoded::NeedMore(n) => panic!("a whole frame asked for {n} more bytes"),
    }
}

proptest! {
    #[test]
    fn call_results_round_trip(result in arb_result()) {
        let message = AgentToControl::CallResult(result);
        prop_assert_eq!(round_trip(&message), message);
    }

    #[test]
    fn call_requests_round_trip(request in arb_request()) {
        let message = ControlToAgent::Call(request);
        prop_assert_eq!(round_trip(&message), message);
    }

    #[test]
    fn heartbeats_round_trip(seq in any::<u64>(), in_flight in any::<u32>()) {
        let message = AgentToControl::Heartbeat(Heartbeat { seq, in_flight });
        prop_assert_eq!(round_trip(&message), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame::<AgentToControl>(&bytes);
        let _ = decode_frame::<ControlToAgent>(&bytes);
    }

    #[test]
    fn two_frames_back_to_back_decode_in_order(a in any::<u64>(), b in any::<u64>()) {
        let mut buf = encode_frame(&AgentToControl::Heartbeat(Heartbeat { seq: a, in_flight: 0 })).unwrap();
        buf.extend(encode_frame(&AgentToControl::Heartbeat(Heartbeat { seq: b, in_flight: 1 })).unwrap());
        let Decoded::Frame { message, consumed } = decode_frame::<AgentToControl>(&buf).unwrap() else { panic!() };
        prop_assert_eq!(message, AgentToControl::Heartbeat(Heartbeat { seq: a, in_flight: 0 }));
        let Decoded::Frame { message, .. } = decode_frame::<AgentToControl>(&buf[consumed..]).unwrap() else { panic!() };
        prop_assert_eq!(message, AgentToControl::Heartbeat(Heartbeat { seq: b, in_flight: 1 }));
    }
}

fn sample_invoke(auth: CallAuth) -> InvokeRequest {
    InvokeRequest {
        call: sample_request(),
        auth,
        auth_cache_key: "con_1:1".into(),
        tls: TlsOptions::default(),
        proxy: None,
        retry: RetryPolicy::default(),
    }
}

#[test]
fn invoke_bytes_are_pinned_and_follow_the_version_1_variants() {
    // Version 2 messages are appended: the version 1 tags keep their numbers.
    let frame = encode_frame(&ControlToAgent::Invoke(Box::new(sample_invoke(
        CallAuth::Bearer { token: "t".into() },
    ))))
    .unwrap();
    assert_eq!(frame[4], 6, "Invoke is the seventh ControlToAgent variant");
    let result = encode_frame(&AgentToControl::InvokeResult(Box::new(InvokeResult {
        result: CallResult::failure(&sample_request(), "agt_1", ErrorClass::Timeout, "slow"),
        rotated_refresh_token: None,
        token_fetches: 0,
    })))
    .unwrap();
    assert_eq!(
        result[4], 5,
        "InvokeResult is the sixth AgentToControl variant"
    );
}

#[test]
fn every_auth_scheme_round_trips_and_debug_hides_secrets() {
    let oauth = OAuth2 {
        grant: OAuth2Grant::Password,
        token_url: "https://idp.example/token".into(),
        client_id: "cid".into(),
        client_secret: "client-secret-canary".into(),
        scopes: vec!["read".into()],
        client_auth: ClientAuth::Basic,
        username: "u".into(),
        password: "password-canary".into(),
        refresh_token: "refresh-canary".into(),
    };
    for auth in [
        CallAuth::None,
        CallAuth::ApiKey {
            placement: KeyPlacement::Query("key".into()),
            prefix: String::new(),
            key: "key-canary".into(),
        },
        CallAuth::Basic {
            username: "u".into(),
            password: "password-canary".into(),
        },
        CallAuth::Bearer {
            token: "token-canary".into(),
        },
        CallAuth::OAuth2(oauth),
        CallAuth::DynamicApiKey(DynamicApiKey {
            method: "POST".into(),
            url: "https://dms.example/login".into(),
            body: r#"{"password":"password-canary"}"#.into(),
            pointer: "/token".into(),
            header: "X-Session".into(),
            prefix: String::new(),
            ttl_secs: 600,
        }),
    ] {
        let mut request = sample_invoke(auth);
        request.tls.client_key_pem = "key-canary".into();
        request.proxy = Some(ProxyOptions {
            url: "http://proxy:3128".into(),
            username: "p".into(),
            password: "password-canary".into(),
        });
        let message = ControlToAgent::Invoke(Box::new(request.clone()));
        assert_eq!(round_trip(&message), message);
        let debug = format!("{message:?}");
        assert!(!debug.contains("canary"), "{debug}");
    }
}
