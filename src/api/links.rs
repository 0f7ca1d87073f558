//! What a node remembers of each delegation it opened sessions on, so that the next opening
//! mints its tokens without a read: a delegation's user, agent, integration and platform never
//! change. The writer checks every claim of tokens minted before its transaction and discards
//! them if any differs (`ops::sessions::create_session`), so a remembered link is never trusted
//! for more than saving the read.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::{DelegationId, Reach, Visibility};
use crate::ops::sessions::Links;

/// Delegations remembered at most; past it the memory starts again empty.
const MOST: usize = 100_000;

#[derive(Default)]
pub struct DelegationLinks {
    known: Mutex<HashMap<DelegationId, Links>>,
}

impl DelegationLinks {
    /// The links of `id`, if remembered and `vis` could read the delegation.
    pub fn get(&self, id: DelegationId, vis: Visibility) -> Option<Links> {
        let links = *self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&id)?;
        let visible = match vis.reach() {
            Reach::All => true,
            Reach::Platform(p) => links.platform == p,
            Reach::User(u) => links.user == u,
            Reach::Nothing => false,
        };
        visible.then_some(links)
    }

    pub fn remember(&self, id: DelegationId, links: Links) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MOST {
            known.clear();
        }
        known.insert(id, links);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, IntegrationId, PlatformId, UserId};

    #[test]
    fn a_delegation_is_remembered_for_the_visibilities_that_read_it_only() {
        let (platform, user) = (PlatformId::generate(), UserId::generate());
        let links = Links { user, agent: AgentId::generate(), integration: IntegrationId::generate(), platform };
        let (known, id) = (DelegationLinks::default(), DelegationId::generate());
        assert!(known.get(id, Visibility::for_test(Reach::All)).is_none(), "nothing before");
        known.remember(id, links);
        assert_eq!(known.get(id, Visibility::for_test(Reach::Platform(platform))), Some(links));
        assert_eq!(known.get(id, Visibility::for_test(Reach::All)), Some(links));
        assert_eq!(known.get(id, Visibility::for_test(Reach::User(user))), Some(links));
        assert!(known.get(id, Visibility::for_test(Reach::Platform(PlatformId::generate()))).is_none());
        assert!(known.get(id, Visibility::for_test(Reach::User(UserId::generate()))).is_none());
        assert!(known.get(id, Visibility::for_test(Reach::Nothing)).is_none());
    }
}
