//! What holds a send back besides its time: the person's frequency caps
//! and quiet hours, as a send asks for them (kept with a scheduled
//! delivery for its release).

use serde::{Deserialize, Serialize};

use crate::caps::CapRule;
use crate::quiet::QuietRule;

/// The frequency caps and quiet hours a send keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRules {
    /// Its frequency caps.
    #[serde(default)]
    pub caps: CapRule,
    /// Its quiet hours.
    #[serde(default)]
    pub quiet: QuietRule,
}
