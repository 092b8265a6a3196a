use serde_json::json;

use super::*;
use crate::model::Attributes;

/// Unix ms of an RFC 3339 instant.
fn ms(rfc3339: &str) -> i64 {
    let ts: jiff::Timestamp = rfc3339.parse().expect("an instant");
    ts.as_millisecond()
}

fn customer(timezone: Option<&str>) -> Customer {
    let attributes = match timezone {
        Some(tz) => json!({ "timezone": tz }),
        None => json!({}),
    };
    Customer {
        id: "c".into(),
        attributes: Attributes::new(attributes.as_object().expect("an object")),
        unsubscribed: false,
        devices: Vec::new(),
    }
}

fn local(at: &str, if_past: IfPast) -> SendTime {
    SendTime::LocalTime {
        local: at.parse().expect("a civil time"),
        fallback: zone("UTC").expect("UTC"),
        fallback_name: "UTC".into(),
        if_past,
    }
}

fn due(time: &SendTime, timezone: Option<&str>, now: i64) -> Schedule {
    match resolve(time, Some(&customer(timezone)), now) {
        Resolved::Hold(s) => s,
        Resolved::Skip(s) => panic!("skipped: {s:?}"),
    }
}

const JAN_2026: &str = "2026-01-01T00:00:00Z";

#[test]
fn a_local_time_in_the_spring_forward_gap_moves_forward_by_the_gap() {
    let s = due(
        &local("2026-03-08T02:30", IfPast::Skip),
        Some("America/New_York"),
        ms(JAN_2026),
    );
    assert_eq!(s.due_ms, ms("2026-03-08T07:30:00Z"));
    assert_eq!(s.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(s.timezone_source, Some(TimezoneSource::Customer));
}

#[test]
fn a_local_time_in_the_fall_back_fold_is_its_first_occurrence() {
    let s = due(
        &local("2026-11-01T01:30", IfPast::Skip),
        Some("America/New_York"),
        ms(JAN_2026),
    );
    // 01:30 EDT (-04:00), not 01:30 EST an hour later: one send.
    assert_eq!(s.due_ms, ms("2026-11-01T05:30:00Z"));
}

#[test]
fn odd_offsets_are_kept_to_the_minute() {
    let s = due(
        &local("2026-06-01T09:00", IfPast::Skip),
        Some("Asia/Kathmandu"),
        ms(JAN_2026),
    );
    assert_eq!(s.due_ms, ms("2026-06-01T03:15:00Z"));
}

#[test]
fn a_thirty_minute_dst_change_moves_a_gap_time_by_thirty_minutes() {
    // Lord Howe Island: +10:30, and +11:00 from 02:00 on the first Sunday
    // of October (02:00 → 02:30).
    let tz = Some("Australia/Lord_Howe");
    let gap = due(&local("2026-10-04T02:15", IfPast::Skip), tz, ms(JAN_2026));
    assert_eq!(gap.due_ms, ms("2026-10-03T15:45:00Z"));
    let winter = due(&local("2026-07-01T09:00", IfPast::Skip), tz, ms(JAN_2026));
    assert_eq!(winter.due_ms, ms("2026-06-30T22:30:00Z"));
    let summer = due(&local("2026-12-01T09:00", IfPast::Skip), tz, ms(JAN_2026));
    assert_eq!(summer.due_ms, ms("2026-11-30T22:00:00Z"));
}

#[test]
fn an_unknown_zone_falls_back_and_is_marked() {
    let time = SendTime::LocalTime {
        local: "2026-06-01T09:00".parse().expect("a civil time"),
        fallback: zone("Europe/Paris").expect("Paris"),
        fallback_name: "Europe/Paris".into(),
        if_past: IfPast::SendNow,
    };
    let invalid = due(&time, Some("Mars/Olympus_Mons"), ms(JAN_2026));
    assert_eq!(invalid.due_ms, ms("2026-06-01T07:00:00Z"));
    assert_eq!(invalid.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(
        invalid.timezone_source,
        Some(TimezoneSource::FallbackInvalid)
    );
    let absent = due(&time, None, ms(JAN_2026));
    assert_eq!(absent.due_ms, invalid.due_ms);
    assert_eq!(absent.timezone_source, Some(TimezoneSource::Fallback));
}

#[test]
fn a_passed_local_time_is_skipped_or_sent_now_as_the_send_says() {
    let now = ms("2026-06-01T12:00:00Z");
    let skip = local("2026-06-01T09:00", IfPast::Skip);
    assert!(matches!(
        resolve(&skip, Some(&customer(None)), now),
        Resolved::Skip(_)
    ));
    let send_now = local("2026-06-01T09:00", IfPast::SendNow);
    assert!(due(&send_now, None, now).due_ms < now);
}

#[test]
fn an_instant_is_due_as_given_and_lateness_counts_from_it() {
    let at = ms("2026-06-01T09:00:00+02:00");
    let mut s = due(&SendTime::At(at), Some("Asia/Kathmandu"), ms(JAN_2026));
    assert_eq!(
        (s.due_ms, s.timezone.clone(), s.timezone_source),
        (at, None, None)
    );
    s.released_ms = Some(at + 90_500);
    assert_eq!(s.late_seconds(), Some(90));
}
