//! Records of version 5: version 4's, and a message's lane.
//!
//! A message names the lane its device sends wait in for provider slots
//! ([`Lane`]), and its rendered push carries it, so a retry or a send
//! resumed after a restart waits in the same lane. The records that hold
//! it (the message, the rendered push, the delivery, the journal entry)
//! are this version's; every other record is an earlier version's type,
//! reused. Records of versions 1 to 4 read as `campaign`, the only lane
//! there was. Like every version, these types are frozen.

use serde::{Serialize, Serializer};

use pushd_actors::model as m;
use pushd_actors::ports as p;

use super::v1::{
    Audience, ConversionGoal, Customer, DeviceSend, JsonText, PushOptions, SendRecord,
};
use super::v4::{DeliveryState, Schedule};
use super::{Frozen, journal_entry, record_enum, record_struct};

record_enum! {
    /// Which queue a message's device sends wait in.
    Lane = m::Lane {
        /// Bulk sends.
        Campaign,
        /// One person's push that should not wait.
        Transactional,
    }
}

record_struct! {
    /// A message template.
    MessageSpec = m::MessageSpec {
        id: String,
        name: String,
        campaign_id: Option<String>,
        title: String,
        body: String,
        deep_link: Option<String>,
        audience: Audience,
        collapse_id: Option<String>,
        conversion: Option<ConversionGoal>,
        app: String,
        push: PushOptions,
        rate_per_minute: Option<u32>,
        created_at: i64,
        lane: Lane,
    }
}

record_struct! {
    /// A rendered push.
    Content = m::Content {
        title: String,
        body: String,
        deep_link: Option<String>,
        collapse_id: Option<String>,
        options: PushOptions,
        rate_per_minute: Option<u32>,
        lane: Lane,
    }
}

record_struct! {
    /// A delivery.
    Delivery = m::Delivery {
        id: String,
        customer_id: String,
        message_id: String,
        campaign_id: Option<String>,
        created_at: i64,
        attempted_at: Option<i64>,
        content: Option<Content>,
        data: JsonText,
        goal: Option<ConversionGoal>,
        sends: Vec<DeviceSend>,
        state: DeliveryState,
        failure_detail: Option<String>,
        schedule: Option<Schedule>,
    }
}

journal_entry! {
    /// A journal entry: version 4's, its messages and deliveries of this
    /// version.
}

/// Written as [`Entry`] reads: the variant's index, then its record.
impl Serialize for Frozen<'_, p::Entry> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            p::Entry::Customer(c) => {
                s.serialize_newtype_variant("Entry", 0, "Customer", &Frozen(c))
            }
            p::Entry::CustomerDeleted(id) => {
                s.serialize_newtype_variant("Entry", 1, "CustomerDeleted", id)
            }
            p::Entry::Message(m) => s.serialize_newtype_variant("Entry", 2, "Message", &Frozen(m)),
            p::Entry::Delivery(d) => {
                s.serialize_newtype_variant("Entry", 3, "Delivery", &Frozen(d))
            }
            p::Entry::SendRecord(r) => {
                s.serialize_newtype_variant("Entry", 4, "SendRecord", &Frozen(r))
            }
            p::Entry::SendRecordsExpired(t) => {
                s.serialize_newtype_variant("Entry", 5, "SendRecordsExpired", t)
            }
            p::Entry::CustomerErased(id) => {
                s.serialize_newtype_variant("Entry", 6, "CustomerErased", id)
            }
        }
    }
}
