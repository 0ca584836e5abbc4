//! The process-local store: cells on the heap, read directly at scrape.

use std::sync::Arc;

use super::{Backing, Cells, Store};
use crate::desc::Desc;
use crate::family::Family;
use crate::snapshot::FamilySnapshot;

/// Values live in this process's memory only.
pub struct LocalStore;

impl Backing for LocalStore {
    fn alloc(&self, desc: &Desc, _labels: &[String], _created: f64) -> Cells {
        Cells::for_series(desc)
    }
}

impl Store for LocalStore {
    fn collect(&self, families: &[Arc<Family>], _everything: bool) -> Vec<FamilySnapshot> {
        families.iter().map(|f| f.snapshot()).collect()
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}
