//! Round trips, tolerance to unknown fields, refusal of invalid messages and of patient data.

use std::net::{IpAddr, Ipv4Addr};

use medgate_contract::*;

fn inventory() -> Inventory {
    Inventory {
        serial: Token::new("SN-0042").expect("valid"),
        hardware_profile: Token::new("nuc-13").expect("valid"),
        os_version: Token::new("2026.11.1").expect("valid"),
        appliance_version: Token::new("0.1.0").expect("valid"),
        ae_title: Some(AeTitle::new("MEDGATE").expect("valid")),
        nics: vec![Nic {
            name: Token::new("eth0").expect("valid"),
            mac: Some(MacAddress::new("02:00:00:00:00:01").expect("valid")),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))],
            link_up: true,
            speed_mbps: Some(1000),
        }],
        disk: Disk {
            total_bytes: 1 << 40,
            free_bytes: 1 << 39,
        },
        peers: vec![Peer {
            calling_ae: AeTitle::new("CT01").expect("valid"),
            called_ae: AeTitle::new("MEDGATE").expect("valid"),
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 50)),
            sop_classes: vec![SopClassUid::new("1.2.840.10008.5.1.4.1.1.2").expect("valid")],
            modalities: vec![Modality::new("CT").expect("valid")],
            accepted: false,
            refusal: Some(Refusal::CallingAeNotAllowed),
            associations: 3,
            last_seen_ms: 1_700_000_000_000,
        }],
        config_schema: Some(1),
    }
}

#[test]
fn every_message_round_trips() {
    let birth = Birth {
        schema: Schema::default(),
        sent_at_ms: 1,
        boot_id: 7,
        inventory: inventory(),
        config_version: 3,
        telemetry_interval_secs: 10,
    };
    assert_eq!(
        decode::<Birth>(&encode(&birth).expect("encodes")).expect("decodes"),
        birth
    );

    let tel = Telemetry {
        schema: Schema::default(),
        sent_at_ms: 2,
        boot_id: 7,
        seq: 9,
        snapshot: TelemetrySnapshot {
            received: Flow {
                objects: 10,
                bytes: 5_000_000,
            },
            queue: QueueStats {
                depth: 4,
                oldest_age_secs: 12,
            },
            ..TelemetrySnapshot::default()
        },
    };
    let json = encode(&tel).expect("encodes");
    assert!(
        String::from_utf8_lossy(&json).contains("\"received\":{\"objects\":10"),
        "flattened snapshot"
    );
    assert_eq!(decode::<Telemetry>(&json).expect("decodes"), tel);

    let ev = Event {
        schema: Schema::default(),
        id: EventId::new(1, 2),
        at_ms: 3,
        event: EventBody::StudyReceived {
            calling_ae: AeTitle::new("CT01").expect("valid"),
            called_ae: AeTitle::new("MEDGATE").expect("valid"),
            modality: Some(Modality::new("CT").expect("valid")),
            sop_classes: vec![],
            received: Flow {
                objects: 500,
                bytes: 265_000_000,
            },
            duration_ms: 4_000,
        },
    };
    assert_eq!(
        decode::<Event>(&encode(&ev).expect("encodes")).expect("decodes"),
        ev
    );

    let receipt = EventReceipt {
        schema: Schema::default(),
        ids: vec![ev.id, EventId::new(1, 3)],
    };
    let json = encode(&receipt).expect("encodes");
    assert_eq!(
        String::from_utf8_lossy(&json),
        r#"{"schema":1,"ids":["0000000000000001-0000000000000002","0000000000000001-0000000000000003"]}"#
    );
    assert_eq!(decode::<EventReceipt>(&json).expect("decodes"), receipt);

    let cmd = Command {
        schema: Schema::default(),
        id: CommandId::new("c-1").expect("valid"),
        issued_at_ms: 5,
        expires_at_ms: None,
        action: CommandAction::PurgeQuarantine {
            older_than_secs: Some(3600),
        },
    };
    let json = encode(&cmd).expect("encodes");
    assert!(String::from_utf8_lossy(&json).contains("\"type\":\"purge_quarantine\""));
    assert_eq!(decode::<Command>(&json).expect("decodes"), cmd);

    let mut config = serde_json::Map::new();
    config.insert(
        "listener".into(),
        serde_json::json!({"ae_title": "MEDGATE"}),
    );
    let desired = DesiredConfig {
        schema: Schema::default(),
        version: 4,
        issued_at_ms: 6,
        config,
    };
    assert_eq!(
        decode::<DesiredConfig>(&encode(&desired).expect("encodes")).expect("decodes"),
        desired
    );

    let reported = ReportedConfig {
        schema: Schema::default(),
        at_ms: 7,
        running_version: 3,
        desired_version: 4,
        status: ConfigStatus::Rejected,
        problems: vec![ConfigProblem {
            code: Token::new("invalid_value").expect("valid"),
            field: Some(Token::new("listener.ae_title").expect("valid")),
        }],
    };
    assert_eq!(
        decode::<ReportedConfig>(&encode(&reported).expect("encodes")).expect("decodes"),
        reported
    );
}

#[test]
fn unknown_fields_and_event_types_are_tolerated() {
    let state: State = decode(
        br#"{"schema":1,"sent_at_ms":1,"state":"online","boot_id":2,"added_in_1_1":{"x":1}}"#,
    )
    .expect("unknown field ignored");
    assert_eq!(state.state, DeviceState::Online);
    let ev: Event = decode(br#"{"schema":1,"id":"0000000000000001-0000000000000002","at_ms":3,"event":{"type":"hologram_received","x":1}}"#)
        .expect("unknown event type is Other");
    assert_eq!(ev.event, EventBody::Other);
}

#[test]
fn invalid_messages_are_typed_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        br#"{"sent_at_ms":1,"state":"online","boot_id":2}"#, // no schema
        br#"{"schema":2,"sent_at_ms":1,"state":"online","boot_id":2}"#, // future schema
        br#"{"schema":0,"sent_at_ms":1,"state":"online","boot_id":2}"#,
        br#"{"schema":1,"sent_at_ms":-1,"state":"online","boot_id":2}"#,
        br#"{"schema":1,"sent_at_ms":1,"state":"sleeping","boot_id":2}"#,
    ];
    for payload in cases {
        let err = decode::<State>(payload).expect_err("must be refused");
        assert!(
            matches!(err, DecodeError::Invalid { kind: "state", .. }),
            "{err}"
        );
    }
    let err = decode::<State>(&vec![b' '; MAX_PAYLOAD_BYTES + 1]).expect_err("too large");
    assert!(matches!(err, DecodeError::TooLarge { .. }));
    let err = decode::<State>(br#"{"schema":2,"sent_at_ms":1,"state":"online","boot_id":2}"#)
        .expect_err("future");
    assert!(
        err.to_string()
            .contains("schema version 2 is not supported"),
        "{err}"
    );
}

#[test]
fn patient_data_cannot_be_carried() {
    // A person name where an AE title, a modality, a token or a SOP class goes: refused.
    let with_name = |field: &str, value: &str| {
        let mut v = serde_json::to_value(Event {
            schema: Schema::default(),
            id: EventId::new(1, 1),
            at_ms: 1,
            event: EventBody::StudyReceived {
                calling_ae: AeTitle::new("CT01").expect("valid"),
                called_ae: AeTitle::new("MEDGATE").expect("valid"),
                modality: Some(Modality::new("CT").expect("valid")),
                sop_classes: vec![SopClassUid::new("1.2.840.10008.5.1.4.1.1.2").expect("valid")],
                received: Flow::default(),
                duration_ms: 0,
            },
        })
        .expect("to value");
        v["event"][field] = serde_json::json!(value);
        serde_json::to_vec(&v).expect("bytes")
    };
    for (field, value) in [
        ("calling_ae", "DOE^JOHN^^^DR PHD"),
        ("modality", "DOE^JOHN"),
        ("modality", "Doe"),
        ("sop_classes", "12345678"),
        ("duration_ms", "19700101"),
    ] {
        assert!(
            decode::<Event>(&with_name(field, value)).is_err(),
            "{field}={value:?} accepted"
        );
    }
    // Free text never fits a token.
    assert!(Token::new("Patient John Doe").is_err());
    assert!(Token::new("DOE^JANE").is_err());
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift stream of mutated valid payloads and random bytes.
    let valid = encode(&Birth {
        schema: Schema::default(),
        sent_at_ms: 1,
        boot_id: 7,
        inventory: inventory(),
        config_version: 3,
        telemetry_interval_secs: 10,
    })
    .expect("encodes");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut refused = 0;
    for _ in 0..5_000 {
        let mut p = valid.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = usize::try_from(next()).expect("64-bit") % p.len();
            p[i] = next().to_le_bytes()[0];
        }
        if decode::<Birth>(&p).is_err() {
            refused += 1;
        }
        let _ = decode::<Event>(&p);
        let _ = decode::<Command>(&p);
        let _ = decode::<EventReceipt>(&p);
    }
    assert!(refused > 1_000, "most mutations are refused ({refused})");
}

#[test]
fn retry_now_names_one_destination_or_all() {
    let cmd = |destination: Option<&str>| Command {
        schema: Schema::default(),
        id: CommandId::new("c-9").expect("valid"),
        issued_at_ms: 5,
        expires_at_ms: None,
        action: CommandAction::RetryNow {
            destination: destination.map(|d| Token::new(d).expect("valid")),
        },
    };
    let one = encode(&cmd(Some("archive"))).expect("encodes");
    assert_eq!(
        String::from_utf8_lossy(&one),
        r#"{"schema":1,"id":"c-9","issued_at_ms":5,"expires_at_ms":null,"action":{"type":"retry_now","destination":"archive"}}"#
    );
    assert_eq!(
        decode::<Command>(&one).expect("decodes"),
        cmd(Some("archive"))
    );
    // Without a destination: every destination.
    let all = br#"{"schema":1,"id":"c-9","issued_at_ms":5,"action":{"type":"retry_now"}}"#;
    assert_eq!(decode::<Command>(all).expect("decodes"), cmd(None));
    // A destination name is a checked token: free text cannot ride along.
    let bad = br#"{"schema":1,"id":"c-9","issued_at_ms":5,"action":{"type":"retry_now","destination":"Doe^John"}}"#;
    assert!(decode::<Command>(bad).is_err());
    // The acknowledgement carries how many destinations were woken.
    let ack = CommandAck {
        schema: Schema::default(),
        id: CommandId::new("c-9").expect("valid"),
        at_ms: 6,
        status: CommandStatus::Succeeded,
        code: None,
        output: CommandOutput {
            destinations: Some(2),
            ..CommandOutput::default()
        },
    };
    let json = encode(&ack).expect("encodes");
    assert!(
        String::from_utf8_lossy(&json).contains("\"destinations\":2"),
        "{}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(decode::<CommandAck>(&json).expect("decodes"), ack);
    // An acknowledgement of an older appliance (no such field) still decodes.
    let old = br#"{"schema":1,"id":"c-9","at_ms":6,"status":"succeeded","output":{"objects":1}}"#;
    assert_eq!(
        decode::<CommandAck>(old)
            .expect("decodes")
            .output
            .destinations,
        None
    );
}

#[test]
fn telemetry_carries_each_destinations_queue_and_reads_older_appliances_without_it() {
    let tel = Telemetry {
        schema: Schema::default(),
        sent_at_ms: 2,
        boot_id: 7,
        seq: 9,
        snapshot: TelemetrySnapshot {
            queue: QueueStats {
                depth: 5,
                oldest_age_secs: 40,
            },
            destinations: vec![
                DestinationQueue {
                    name: Token::new("regional-archive").expect("valid"),
                    depth: 5,
                    oldest_age_secs: 40,
                    quarantined: 0,
                    state: DestinationState::BackingOff,
                },
                DestinationQueue {
                    name: Token::new("web").expect("valid"),
                    depth: 0,
                    oldest_age_secs: 0,
                    quarantined: 2,
                    state: DestinationState::Quarantining,
                },
            ],
            ..TelemetrySnapshot::default()
        },
    };
    let json = encode(&tel).expect("encodes");
    let text = String::from_utf8_lossy(&json);
    assert!(
        text.contains(r#""destinations":[{"name":"regional-archive","depth":5,"oldest_age_secs":40,"quarantined":0,"state":"backing_off"}"#),
        "{text}"
    );
    assert_eq!(decode::<Telemetry>(&json).expect("decodes"), tel);
    // An appliance from before per-destination queues: no field, an empty list.
    let old: Telemetry = decode(
        br#"{"schema":1,"sent_at_ms":1,"boot_id":2,"seq":3,"uptime_secs":4,"received":{"objects":0,"bytes":0},"forwarded":{"objects":0,"bytes":0},"queue":{"depth":0,"oldest_age_secs":0},"quarantine_objects":0,"disk":{"total_bytes":0,"free_bytes":0},"associations_active":0,"forward_latency_ms":{"p50":0,"p90":0,"p99":0,"max":0},"errors":{"receive":0,"forward":0,"storage":0,"other":0}}"#,
    )
    .expect("decodes");
    assert!(old.snapshot.destinations.is_empty());
    // A newer appliance's state word, and a destination without the later fields.
    let newer: DestinationQueue =
        serde_json::from_str(r#"{"name":"a","depth":1,"oldest_age_secs":2,"state":"draining"}"#)
            .expect("decodes");
    assert_eq!(
        (newer.state, newer.quarantined),
        (DestinationState::Other, 0)
    );
    // A destination name is a token: free text cannot travel.
    assert!(
        serde_json::from_str::<DestinationQueue>(
            r#"{"name":"Mustermann Erika","depth":1,"oldest_age_secs":2}"#
        )
        .is_err()
    );
}

#[test]
fn a_full_file_chunk_fits_in_one_message() {
    use base64::Engine as _;
    let raw = vec![0xA5_u8; FILE_CHUNK_BYTES];
    let chunk = FileChunk {
        schema: Schema::default(),
        command: CommandId::new("c-42").expect("valid"),
        name: Token::new("diagnostics-1764672000000.json").expect("valid"),
        total_bytes: MAX_FILE_BYTES,
        sha256: Sha256Hex::new("ab".repeat(32)).expect("valid"),
        offset: MAX_FILE_BYTES - FILE_CHUNK_BYTES as u64,
        data: base64::engine::general_purpose::STANDARD.encode(&raw),
    };
    let payload = encode(&chunk).expect("encodes");
    assert!(payload.len() < MAX_PAYLOAD_BYTES, "{} bytes", payload.len());
    let back: FileChunk = decode(&payload).expect("decodes");
    assert_eq!(back, chunk);
    assert_eq!(
        DeviceTopics::parse("medgate/v1/st-olav/ct-1/file")
            .expect("parses")
            .1,
        Kind::File
    );
}

#[test]
fn a_file_splits_into_ordered_chunks_that_fit_a_payload() {
    use medgate_contract::{CommandId, FILE_CHUNK_BYTES, FileChunk, MAX_PAYLOAD_BYTES, Sha256Hex};
    let command = CommandId::new("c-1").expect("id");
    let name = Token::new("diag-1.json").expect("name");
    let sha = Sha256Hex::new("a".repeat(64)).expect("sha");
    let content: Vec<u8> = (0..FILE_CHUNK_BYTES * 2 + 5)
        .map(|i| u8::try_from(i % 251).expect("fits"))
        .collect();
    let chunks: Vec<FileChunk> = FileChunk::split(&command, &name, &sha, &content).collect();
    assert_eq!(
        chunks.iter().map(|c| c.offset).collect::<Vec<_>>(),
        vec![0, FILE_CHUNK_BYTES as u64, 2 * FILE_CHUNK_BYTES as u64]
    );
    let mut joined = Vec::new();
    for c in &chunks {
        assert_eq!(c.total_bytes, content.len() as u64);
        assert!(encode(c).expect("encode").len() <= MAX_PAYLOAD_BYTES);
        joined.extend(c.bytes().expect("base64"));
    }
    assert_eq!(joined, content);
    assert_eq!(FileChunk::split(&command, &name, &sha, &[]).count(), 0);
}

#[test]
fn an_update_offer_and_its_cancellation_round_trip_on_their_topic() {
    let offer = DesiredUpdate {
        schema: Schema::default(),
        campaign: Token::new("c-7").expect("valid"),
        issued_at_ms: 1_764_672_000_000,
        action: UpdateAction::Install(UpdateOffer {
            version: Token::new("0.2.0").expect("valid"),
            sha256: Sha256Hex::new("ab".repeat(32)).expect("valid"),
            size: 48_213_504,
            url: HttpsUrl::new("https://fleet.region.example:8443/device/v1/bundles/abab")
                .expect("valid"),
            mode: InstallMode::Forced,
            deadline_ms: Some(1_764_700_000_000),
            window: Some(UtcWindow {
                start_minute: 22 * 60,
                minutes: 240,
            }),
        }),
    };
    let payload = encode(&offer).expect("encodes");
    let text = String::from_utf8(payload.clone()).expect("utf-8");
    assert!(text.contains(r#""type":"install""#), "{text}");
    assert_eq!(decode::<DesiredUpdate>(&payload).expect("decodes"), offer);
    let cancel = DesiredUpdate {
        action: UpdateAction::Cancel,
        ..offer
    };
    let back: DesiredUpdate = decode(&encode(&cancel).expect("encodes")).expect("decodes");
    assert_eq!(back, cancel);
    assert_eq!(
        DeviceTopics::parse("medgate/v1/st-olav/ct-1/update/desired")
            .expect("parses")
            .1,
        Kind::UpdateDesired
    );
    assert!(!Kind::UpdateDesired.from_device());
}

#[test]
fn a_download_address_is_an_https_address_and_nothing_more() {
    assert_eq!(
        HttpsUrl::new("https://fleet:8443/d/")
            .expect("valid")
            .as_str(),
        "https://fleet:8443/d"
    );
    assert!(HttpsUrl::new("https://[::1]:8443/device/v1").is_ok());
    for bad in [
        "http://fleet/d",
        "https://",
        "https://:8443/d",
        "https://user@fleet/d",
        "https://fleet/d?patient=x",
        "https://fleet/d#x",
        "https://fleet/a b",
        "https://fleet/^Doe",
    ] {
        assert!(HttpsUrl::new(bad).is_err(), "{bad:?} accepted");
    }
    assert!(HttpsUrl::new(format!("https://f/{}", "a".repeat(260))).is_err());
}
