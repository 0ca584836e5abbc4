//! What a collection reads: the values of a family's series at one moment, as the stores hand
//! them to the encoders.

use std::sync::Arc;

use crate::desc::Desc;
use crate::exemplar::Exemplar;

/// Values of one series at collection time.
#[derive(Clone, Debug)]
pub struct SeriesSnapshot {
    /// Label values aligned with the family's label names.
    pub labels: Vec<String>,
    /// Cell values, laid out as the family kind's cells.
    pub values: Vec<f64>,
    /// Creation time in seconds since the epoch.
    pub created: f64,
    /// Key-value pairs of an info series.
    pub info: Vec<(String, String)>,
    /// Exemplars by position: a counter's one, a histogram's per bucket (empty: none recorded).
    pub exemplars: Vec<Option<Exemplar>>,
}

/// One family and the values of its series at collection time.
#[derive(Clone, Debug)]
pub struct FamilySnapshot {
    /// The family's description.
    pub desc: Arc<Desc>,
    /// Its series.
    pub series: Vec<SeriesSnapshot>,
}
