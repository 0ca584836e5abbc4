//! A registry: the set of families one exposition shows, with clash detection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::family::Family;
use crate::snapshot::FamilySnapshot;
use crate::sync;

#[derive(Default)]
struct Inner {
    families: Vec<Arc<Family>>,
    /// Sample name -> owner (a family name, or a foreign collector's key).
    names: HashMap<String, String>,
}

/// The families one exposition shows.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Claim `names` for `owner`, failing if any is taken.
    pub fn reserve(&self, owner: &str, names: &[String]) -> Result<()> {
        let mut inner = sync::write(&self.inner);
        let mut dup: Vec<&String> = names.iter().filter(|n| inner.names.contains_key(*n)).collect();
        if !dup.is_empty() {
            dup.sort();
            dup.dedup();
            let list: Vec<String> = dup.iter().map(|n| format!("'{n}'")).collect();
            return Err(Error::Duplicate(format!(
                "Duplicated timeseries in CollectorRegistry: {{{}}}",
                list.join(", ")
            )));
        }
        for n in names {
            inner.names.insert(n.clone(), owner.to_owned());
        }
        Ok(())
    }

    /// Release every name held by `owner`.
    pub fn release(&self, owner: &str) {
        sync::write(&self.inner).names.retain(|_, o| o != owner);
    }

    /// Add a family, failing if any of its sample names is taken.
    pub fn register(&self, family: Arc<Family>) -> Result<()> {
        self.reserve(&family.desc.name, &family.desc.sample_names())?;
        let mut inner = sync::write(&self.inner);
        inner.families.push(family);
        Ok(())
    }

    /// Remove the family named `name`; return whether it was there.
    pub fn unregister(&self, name: &str) -> bool {
        let mut inner = sync::write(&self.inner);
        let before = inner.families.len();
        inner.families.retain(|f| f.desc.name != name);
        let found = inner.families.len() != before;
        if found {
            inner.names.retain(|_, o| o != name);
        }
        found
    }

    /// The registered families, in registration order.
    pub fn families(&self) -> Vec<Arc<Family>> {
        sync::read(&self.inner).families.clone()
    }

    /// Collect every family through the current store; with `everything`, also families that
    /// only other processes sharing the store have created.
    pub fn collect(&self, everything: bool) -> Vec<FamilySnapshot> {
        crate::store::current().collect(&self.families(), everything)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Desc;
    use crate::desc::Kind;

    #[test]
    fn clashing_names_are_refused() {
        let reg = Registry::new();
        let fam = |kind, name: &str| Family::new(Desc::new(kind, name, "", vec![], "", "", "").unwrap());
        reg.register(fam(Kind::Counter, "x")).unwrap();
        let err = reg.register(fam(Kind::Gauge, "x_total")).unwrap_err();
        assert!(matches!(&err, crate::error::Error::Duplicate(m) if m.contains("'x_total'")), "{err}");
        reg.register(fam(Kind::Gauge, "y")).unwrap();
        assert!(reg.unregister("x"));
        reg.register(fam(Kind::Gauge, "x_total")).unwrap();
        assert_eq!(reg.collect(false).len(), 2);
    }
}
