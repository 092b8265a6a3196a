//! Records of version 3: version 2's, and the failure reasons
//! `template_limit_exceeded` and `internal_error`.
//!
//! Only the failure reason changed. [`FailureReason`] holds version 1's
//! reasons in their order, then `TemplateLimitExceeded` and `InternalError`: postcard writes a
//! variant as its index, so bytes of versions 1 and 2 read as version 3
//! too. The records that hold a reason (a device's state, a precheck, a
//! delivery's state, the delivery, the journal entry) are this version's
//! over it; every other record is version 1's type, reused. Like every
//! version, these types are frozen; [`super::v4`] replaced them as the one
//! written.

use pushd_actors::model as m;
use pushd_actors::status as st;

use super::v1::{
    Content, ConversionGoal, Customer, DeviceSend, DeviceStatus, JsonText, MessageSpec,
    MessageStatus, SendRecord,
};
use super::{journal_entry, record_enum, record_struct};

record_enum! {
    /// A failure reason (read only: [`super::v4`] added two).
    read FailureReason = st::FailureReason {
        /// Liquid variable missing.
        LiquidVariableMissing,
        /// Liquid syntax.
        LiquidSyntax,
        /// Customer not found.
        CustomerNotFound,
        /// Customer unsubscribed.
        CustomerUnsubscribed,
        /// Credentials not found.
        CredentialsNotFound,
        /// Provider rejected.
        ProviderRejected,
        /// Retries exhausted.
        RetriesExhausted,
        /// Devices suppressed.
        DevicesSuppressed,
        /// No devices.
        NoDevices,
        /// Payload too large.
        PayloadTooLarge,
        /// Template limit exceeded.
        TemplateLimitExceeded,
        /// Internal error.
        InternalError,
    }
}

record_struct! {
    /// One device's state.
    read DeviceState = st::DeviceState {
        status: DeviceStatus,
        failure: Option<FailureReason>,
        sent_at: Option<i64>,
        delivered_at: Option<i64>,
        opened_at: Option<i64>,
    }
}

record_struct! {
    /// A failure decided before sending.
    read Precheck = st::Precheck {
        status: MessageStatus,
        reason: FailureReason,
    }
}

record_struct! {
    /// A delivery's status machine.
    read DeliveryState = st::DeliveryState {
        precheck: Option<Precheck>,
        devices: Vec<DeviceState>,
        converted_at: Option<i64>,
    }
    new { held: false }
}

record_struct! {
    /// A delivery.
    read Delivery = m::Delivery {
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
    }
    new { schedule: None }
}

journal_entry! {
    /// A journal entry: version 2's, its deliveries of this version. Read,
    /// never written: [`super::v4`] holds its deliveries' schedules.
}
