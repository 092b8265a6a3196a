use std::sync::Arc;

use pushd_actors::caps::{CapRule, FrequencyCap};
use pushd_actors::model::{
    Attributes, Audience, Content, Customer, DEFAULT_APP, Delivery, Device, DeviceSend,
    Environment, Lane, MessageSpec, Platform, PushOptions,
};
use pushd_actors::ports::{Change, Entry};
use pushd_actors::quiet::{QuietAction, QuietHours, QuietRule};
use pushd_actors::rules::SendRules;
use pushd_actors::schedule::{HeldFor, Schedule, TimezoneSource};
use pushd_actors::status::{DeliveryState, DeviceState, FailureReason, MessageStatus, Outcome};
use pushd_actors::tally::Tally;
use serde_json::json;

use super::*;

fn customer() -> Customer {
    let attrs = json!({"plan": "pro", "n": 3});
    Customer {
        id: "ada".into(),
        attributes: Attributes::new(attrs.as_object().unwrap()),
        unsubscribed: false,
        devices: vec![Device {
            id: "tok".into(),
            platform: Platform::Ios,
            app: DEFAULT_APP.into(),
            environment: Environment::Sandbox,
            last_used: 1_764_100_000,
            attributes: Attributes::default(),
            suppressed: true,
            opted_in: Some(true),
        }],
    }
}

fn delivery() -> Delivery {
    let mut state = DeliveryState::new(vec![DeviceState::attempted(), DeviceState::attempted()]);
    state.devices[0].apply_outcome(&Outcome::Sent, 1_764_100_001);
    state.devices[1].apply_outcome(
        &Outcome::Failed(FailureReason::RetriesExhausted),
        1_764_100_002,
    );
    let send = |token: &str, platform| DeviceSend {
        token: token.into(),
        platform,
        app: DEFAULT_APP.into(),
        environment: Environment::Production,
        attempts: 3,
        last_error: Some("503".into()),
        provider_id: None,
        duplicates: 1,
        opted_in: None,
    };
    let mut options = PushOptions {
        relevance_score: Some(0.5),
        ..PushOptions::default()
    };
    options.data.insert("k".into(), "v".into());
    Delivery {
        id: "01D".into(),
        customer_id: "ada".into(),
        message_id: "m".into(),
        campaign_id: Some("c".into()),
        created_at: 1_764_100_000,
        attempted_at: Some(1_764_100_000),
        content: Some(Arc::new(Content {
            title: "t".into(),
            body: "b".into(),
            deep_link: None,
            collapse_id: Some("x".into()),
            options,
            rate_per_minute: Some(60),
            lane: Lane::Transactional,
        })),
        data: json!({"order": 7}),
        goal: None,
        sends: vec![send("a", Platform::Ios), send("b", Platform::Android)],
        state,
        failure_detail: Some("detail".into()),
        schedule: None,
    }
}

fn message() -> MessageSpec {
    MessageSpec {
        id: "m".into(),
        name: "n".into(),
        campaign_id: None,
        title: "t".into(),
        body: "b".into(),
        deep_link: None,
        audience: Audience::LastDevice,
        collapse_id: None,
        conversion: None,
        app: DEFAULT_APP.into(),
        push: PushOptions::default(),
        rate_per_minute: None,
        lane: Lane::Transactional,
        created_at: 5,
    }
}

#[test]
fn snapshot_values_round_trip_with_their_version_first() {
    let c = customer();
    let bytes = c.encode().unwrap();
    assert_eq!(bytes[0], 1);
    assert_eq!(Customer::decode(&bytes).unwrap(), c);
    let d = delivery();
    let bytes = d.encode().unwrap();
    assert_eq!(bytes[0], VALUE_VERSION);
    assert_eq!(Delivery::decode(&bytes).unwrap(), d);
    let m = message();
    let bytes = m.encode().unwrap();
    assert_eq!(bytes[0], MESSAGE_VERSION);
    assert_eq!(MessageSpec::decode(&bytes).unwrap(), m);
    let mut t = Tally::default();
    t.message.sent = 4;
    t.android.opted_in_delivered = 2;
    assert_eq!(Tally::decode(&t.encode().unwrap()).unwrap(), t);
    assert_eq!(
        <[i64; 2]>::decode(&[3, 7].encode().unwrap()).unwrap(),
        [3, 7]
    );
}

#[test]
fn an_unversioned_value_reads_once_tagged() {
    // Format 3 wrote the version-1 record alone.
    let old = postcard::to_allocvec(&Frozen(&customer())).unwrap();
    assert_eq!(
        Customer::decode(&tag_unversioned(&old)).unwrap(),
        customer()
    );
}

#[test]
fn newer_snapshot_values_are_refused_naming_both() {
    let mut bytes = customer().encode().unwrap();
    bytes[0] = 9;
    let e = Customer::decode(&bytes).unwrap_err().to_string();
    assert!(e.contains("version 9") && e.contains("1 to 1"), "{e}");
    assert!(matches!(Customer::decode(&[]), Err(RecordError::Empty)));
}

#[test]
fn a_journal_record_of_a_newer_version_is_refused_naming_both() {
    let e = decode_entries(6, &[0]).unwrap_err().to_string();
    assert!(e.contains("version 6") && e.contains("1 to 5"), "{e}");
}

/// The version-1 record of `m`, a `campaign` message: version 5's without
/// the lane, its last field.
fn version_1_message(m: &MessageSpec) -> Vec<u8> {
    assert_eq!(m.lane, Lane::Campaign);
    let mut bytes = postcard::to_allocvec(&Frozen(m)).unwrap();
    assert_eq!(bytes.pop(), Some(0), "the lane, campaign, comes last");
    bytes
}

#[test]
fn messages_and_pushes_of_versions_before_5_read_as_campaign() {
    let campaign = MessageSpec {
        lane: Lane::Campaign,
        ..message()
    };
    let old = [&[1u8][..], &version_1_message(&campaign)].concat();
    assert_eq!(MessageSpec::decode(&old).unwrap(), campaign);
    // A transactional message is a version-2 value, refused by a pushd
    // that reads only version 1.
    let bytes = message().encode().unwrap();
    assert_eq!(
        MessageSpec::decode(&bytes).unwrap().lane,
        Lane::Transactional
    );
    let mut newer = bytes;
    newer[0] = 3;
    let e = MessageSpec::decode(&newer).unwrap_err().to_string();
    assert!(e.contains("version 3") && e.contains("1 to 2"), "{e}");
    // A version-4 delivery's push (version 1's content) has no lane.
    let mut d = delivery();
    Arc::make_mut(d.content.as_mut().unwrap()).lane = Lane::Campaign;
    let push = postcard::to_allocvec(&Frozen(&**d.content.as_ref().unwrap())).unwrap();
    let v5 = postcard::to_allocvec(&Frozen(&d)).unwrap();
    let lane = v5.windows(push.len()).position(|w| w == push).unwrap() + push.len() - 1;
    // Version 4's record: the same bytes without the push's lane.
    let mut old = [&[4u8][..], &v5[..lane], &v5[lane + 1..]].concat();
    assert_eq!(Delivery::decode(&old).unwrap(), d);
    old[0] = 5;
    assert!(Delivery::decode(&old).is_err(), "version 5 holds the lane");
}

#[test]
fn journal_entries_round_trip() {
    let changes = vec![
        Change::of(Entry::Customer(customer())),
        Change::delivery(None, delivery()),
        Change::of(Entry::Message(Box::new(message()))),
        Change::of(Entry::CustomerDeleted("ada".into())),
        Change::of(Entry::SendRecordsExpired(42)),
        Change::of(Entry::CustomerErased("ada".into())),
    ];
    let mut bytes = Vec::new();
    encode_entries(&changes, &mut bytes).unwrap();
    let back = decode_entries(JOURNAL_VERSION, &bytes).unwrap();
    let expected: Vec<Entry> = changes.into_iter().map(|c| c.entry).collect();
    assert_eq!(back, expected);
}

#[test]
fn an_erasure_is_a_version_2_entry_after_version_1_s() {
    let mut bytes = Vec::new();
    encode_entries(
        &[Change::of(Entry::CustomerErased("ada".into()))],
        &mut bytes,
    )
    .unwrap();
    // One entry, variant 6 (after version 1's six), then the id.
    assert_eq!(bytes, [&[1u8, 6, 3][..], b"ada"].concat());
    assert!(
        decode_entries(1, &bytes).is_err(),
        "version 1 has no erasure"
    );
}

#[test]
fn a_version_1_record_still_decodes_as_1_and_as_2() {
    // What pushd 0.1 wrote: a list of five version-1 entries, each its
    // variant's index, then its record.
    // (Its delivery records are version 1's, which version 4's no longer
    // write: tests/upgrade.rs reads them from files 0.1 wrote.)
    let mut bytes = vec![4, 0];
    bytes.extend(postcard::to_allocvec(&Frozen(&customer())).unwrap());
    bytes.push(2);
    let message = MessageSpec {
        lane: Lane::Campaign,
        ..message()
    };
    bytes.extend(version_1_message(&message));
    bytes.extend([1, 3]);
    bytes.extend(b"ada");
    // 42, zigzagged.
    bytes.extend([5, 84]);
    let expected = vec![
        Entry::Customer(customer()),
        Entry::Message(Box::new(message)),
        Entry::CustomerDeleted("ada".into()),
        Entry::SendRecordsExpired(42),
    ];
    assert_eq!(decode_entries(1, &bytes).unwrap(), expected);
    // Versions 2 to 4 hold version 1's entries in their order: the same
    // bytes read as those versions too.
    for version in [2, 3, 4] {
        assert_eq!(decode_entries(version, &bytes).unwrap(), expected);
    }
    // Version 5's message has a lane after the fields version 1 wrote.
    assert!(decode_entries(5, &bytes).is_err());
    // And a version beyond is refused, naming both.
    let e = decode_entries(6, &bytes).unwrap_err().to_string();
    assert!(e.contains("version 6") && e.contains("1 to 5"), "{e}");
}

#[test]
fn the_reasons_and_statuses_of_version_4_are_written_and_read_back() {
    for (status, reason) in [
        (MessageStatus::Failed, FailureReason::TemplateLimitExceeded),
        (MessageStatus::Failed, FailureReason::InternalError),
        (MessageStatus::Undeliverable, FailureReason::LocalTimePassed),
        (MessageStatus::Canceled, FailureReason::Canceled),
    ] {
        let mut ended = delivery();
        ended.sends.clear();
        ended.content = None;
        ended.state = DeliveryState::ended(status, reason, Vec::new());
        reads_back_as_written(ended);
    }
    let mut held = delivery();
    held.sends.clear();
    held.content = None;
    held.state = DeliveryState::held();
    held.schedule = Some(Schedule {
        due_ms: 1_772_955_000_000,
        timezone: Some("America/New_York".into()),
        timezone_source: Some(TimezoneSource::FallbackInvalid),
        released_ms: None,
        platforms: vec![Platform::Ios, Platform::Android],
        rules: SendRules {
            caps: CapRule {
                frequency_caps: Some(vec![FrequencyCap {
                    max: 2,
                    per_seconds: 3_600,
                }]),
                bypass: true,
            },
            quiet: QuietRule {
                quiet_hours: Some(QuietHours::parse("21:00", "08:00", QuietAction::Drop).unwrap()),
                bypass: false,
            },
        },
        held_for: HeldFor::QuietHours,
    });
    reads_back_as_written(held);
}

fn reads_back_as_written(value: Delivery) {
    // As a snapshot value of the current version.
    let bytes = value.encode().unwrap();
    assert_eq!(bytes[0], VALUE_VERSION);
    assert_eq!(Delivery::decode(&bytes).unwrap(), value);
    // In the journal. Without a push the record is version 4's too.
    let mut entries = Vec::new();
    encode_entries(&[Change::delivery(None, value.clone())], &mut entries).unwrap();
    for version in [4, JOURNAL_VERSION] {
        let back = decode_entries(version, &entries).unwrap();
        assert_eq!(back, [Entry::Delivery(Box::new(value.clone()))]);
    }
    let mut newer = bytes;
    newer[0] = 6;
    let e = Delivery::decode(&newer).unwrap_err().to_string();
    assert!(e.contains("version 6") && e.contains("1 to 5"), "{e}");
}

#[test]
fn counters_of_version_1_read_with_nothing_scheduled_and_version_2_round_trips() {
    let mut tally = Tally::default();
    tally.message.sends = 7;
    tally.ios.sent = 3;
    let mut old = vec![1u8];
    let counts = |c: &pushd_actors::tally::Counts| {
        [
            c.sends,
            c.attempted,
            c.sent,
            c.delivered,
            c.opened,
            c.converted,
            c.failed,
            c.undeliverable,
            c.bounced,
            c.suppressed,
            c.opted_in_sent,
            c.opted_in_delivered,
        ]
    };
    for c in [&tally.message, &tally.ios, &tally.android] {
        old.extend(postcard::to_allocvec(&counts(c)).unwrap());
    }
    assert_eq!(Tally::decode(&old).unwrap(), tally);
    tally.message.scheduled = 2;
    tally.message.canceled = 1;
    let bytes = tally.encode().unwrap();
    assert_eq!(bytes[0], 2);
    assert_eq!(Tally::decode(&bytes).unwrap(), tally);
}

#[test]
fn invalid_stored_attributes_are_refused() {
    let mut bad = customer();
    bad.attributes = Attributes::default();
    let mut bytes = bad.encode().unwrap();
    // The empty attributes' text `{}` (2 bytes) becomes `[1]`.
    let at = bytes.windows(3).position(|w| w == [2, b'{', b'}']).unwrap();
    bytes.splice(at..at + 3, [3, b'[', b'1', b']']);
    assert!(matches!(
        Customer::decode(&bytes),
        Err(RecordError::Invalid(_))
    ));
}
