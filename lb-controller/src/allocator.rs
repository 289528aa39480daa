//! Address management: which Service holds which address, and the choice of a new one.
//!
//! Pure logic, no I/O, so its rules are tested directly (unit and property tests below):
//! - an address is held by one Service, or shared by several whose sharing keys match, whose ports do not
//!   clash, and whose traffic policies agree (Local Services share only with the same pod selector);
//! - [`Allocator::restore`] replays what Service statuses already say, oldest Service first, so a restart
//!   never moves an address and of two conflicting claims the older wins;
//! - [`Allocator::assign`] keeps what a Service holds as long as it still satisfies the request, and when a
//!   request cannot be met it changes nothing (the Service keeps its old address and the error says why);
//! - pools are only consulted for new choices: an address whose range left its pool stays with its Service
//!   and is reported through [`Allocator::outside_pools`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::pool::PoolDef;
use crate::ranges::{AddressRange, Family, is_buggy};
use crate::request::{FamilyPolicy, Request, ServiceKey, TrafficPolicy};

/// Why a Service did not get (all) the addresses it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The named pool does not exist (or its spec does not check out).
    #[error("address pool {0:?} (annotation address-pool) does not exist or is invalid")]
    UnknownPool(String),
    /// The named pool exists but does not admit the Service.
    #[error("address pool {0:?} does not admit this Service (spec.serviceAllocation)")]
    PoolRefuses(String),
    /// No pool can give an address of this family to the Service.
    #[error("no address pool with {0} addresses admits this Service")]
    NoPool(Family),
    /// Every admitting pool of this family is full.
    #[error("no free {family} address left in pools {pools}")]
    Exhausted {
        /// The family asked.
        family: Family,
        /// The pools tried, comma-separated.
        pools: String,
    },
    /// A requested address is in no pool that admits the Service.
    #[error("requested address {0} (loadBalancerIPs) is in no pool that admits this Service")]
    OutsidePools(IpAddr),
    /// A requested or restored address is held by a Service it cannot be shared with.
    #[error("address {address} is already used by {holder}: {reason}")]
    Taken {
        /// The address.
        address: IpAddr,
        /// Who holds it.
        holder: ServiceKey,
        /// Why sharing is impossible.
        reason: String,
    },
}

/// What a holder contributes to the sharing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    sharing_key: Option<String>,
    ports: Vec<(String, i32)>,
    traffic: TrafficPolicy,
    selector: BTreeMap<String, String>,
}

impl Share {
    fn of(request: &Request) -> Self {
        Self {
            sharing_key: request.sharing_key.clone(),
            ports: request.ports.clone(),
            traffic: request.traffic_policy,
            selector: request.selector.clone(),
        }
    }

    /// Why `self` cannot share an address with `other`, if it cannot.
    fn clash(&self, other: &Self) -> Option<String> {
        match (&self.sharing_key, &other.sharing_key) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => return Some("the allow-shared-ip keys differ".into()),
            _ => return Some("sharing needs the same allow-shared-ip key on both".into()),
        }
        if let Some((proto, port)) = self.ports.iter().find(|p| other.ports.contains(p)) {
            return Some(format!("both use port {port}/{proto}"));
        }
        if self.traffic != other.traffic {
            return Some("their externalTrafficPolicy differs".into());
        }
        if self.traffic == TrafficPolicy::Local && self.selector != other.selector {
            return Some(
                "externalTrafficPolicy Local Services share only with the same selector".into(),
            );
        }
        None
    }
}

/// The allocator's state: pools and who holds what.
#[derive(Debug, Default)]
pub struct Allocator {
    pools: Vec<PoolDef>,
    holders: BTreeMap<IpAddr, BTreeMap<ServiceKey, Share>>,
    by_service: HashMap<ServiceKey, Vec<IpAddr>>,
    /// Lowest address in a range that may be free, so filling a pool does not rescan what it gave out.
    hints: HashMap<AddressRange, IpAddr>,
}

/// Per-pool usage, for the pool's status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// IPv4 addresses held.
    pub assigned_v4: u64,
    /// IPv4 addresses free (saturating).
    pub available_v4: u64,
    /// IPv6 addresses held.
    pub assigned_v6: u64,
    /// IPv6 addresses free (saturating).
    pub available_v6: u64,
}

impl Allocator {
    /// An allocator over `pools` with nothing held.
    pub fn new(pools: Vec<PoolDef>) -> Self {
        let mut allocator = Self::default();
        allocator.set_pools(pools);
        allocator
    }

    /// Replaces the pools; what Services hold is untouched.
    pub fn set_pools(&mut self, mut pools: Vec<PoolDef>) {
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        self.pools = pools;
        self.hints.clear();
    }

    /// The pools, by name.
    pub fn pools(&self) -> &[PoolDef] {
        &self.pools
    }

    /// The first pool (by name) whose ranges hold `address`.
    pub fn pool_of(&self, address: IpAddr) -> Option<&PoolDef> {
        self.pools.iter().find(|p| p.contains(address))
    }

    /// What `service` holds.
    pub fn assigned(&self, service: &ServiceKey) -> &[IpAddr] {
        self.by_service.get(service).map_or(&[], Vec::as_slice)
    }

    /// Every held address and its holders.
    pub fn holdings(&self) -> impl Iterator<Item = (IpAddr, impl Iterator<Item = &ServiceKey>)> {
        self.holders.iter().map(|(a, h)| (*a, h.keys()))
    }

    /// The Services holding `address`.
    pub fn holders_of(&self, address: IpAddr) -> impl Iterator<Item = &ServiceKey> {
        self.holders
            .get(&address)
            .into_iter()
            .flat_map(BTreeMap::keys)
    }

    /// How many addresses Services hold.
    pub fn held_count(&self) -> usize {
        self.holders.len()
    }

    /// Whether any Service holds `address`.
    pub fn is_held(&self, address: IpAddr) -> bool {
        self.holders.contains_key(&address)
    }

    /// Held addresses that no pool lists any more, with their holders.
    pub fn outside_pools(&self) -> Vec<(IpAddr, Vec<ServiceKey>)> {
        self.holders
            .iter()
            .filter(|(a, _)| self.pool_of(**a).is_none())
            .map(|(a, h)| (*a, h.keys().cloned().collect()))
            .collect()
    }

    /// Claims the addresses a Service's status already shows. Call oldest Service first: a claim that
    /// cannot share with an earlier one is refused and nothing is claimed for this Service.
    pub fn restore(&mut self, request: &Request) -> Result<(), AllocError> {
        let share = Share::of(request);
        for address in &request.current {
            self.check_share(*address, &request.key, &share)?;
        }
        self.take(&request.key, &request.current, &share);
        Ok(())
    }

    /// Gives `request` the addresses it asks for, keeping what it holds when that still fits.
    /// `admits` says whether a pool's allocation limits let this Service in. On error nothing changes.
    pub fn assign(
        &mut self,
        request: &Request,
        admits: impl Fn(&PoolDef) -> bool,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let share = Share::of(request);
        if let Some(pool) = &request.pool {
            let named = self
                .pools
                .iter()
                .find(|p| &p.name == pool)
                .ok_or_else(|| AllocError::UnknownPool(pool.clone()))?;
            if !admits(named) {
                return Err(AllocError::PoolRefuses(pool.clone()));
            }
        }
        let held = self.assigned(&request.key).to_vec();
        let wanted: Vec<Family> = match request.family_policy {
            FamilyPolicy::Single => request.families.iter().take(1).copied().collect(),
            FamilyPolicy::PreferDual | FamilyPolicy::RequireDual => {
                let mut both = request.families.clone();
                for family in [Family::V4, Family::V6] {
                    if !both.contains(&family) {
                        both.push(family);
                    }
                }
                both
            }
        };

        let mut chosen = Vec::new();
        let mut first_error = None;
        for family in &wanted {
            match self.choose(request, &share, *family, &held, &admits) {
                Ok(address) => chosen.push(address),
                Err(error) => {
                    let optional = request.family_policy == FamilyPolicy::PreferDual;
                    if !optional {
                        return Err(error);
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        if chosen.is_empty() {
            return Err(first_error.unwrap_or(AllocError::NoPool(Family::V4)));
        }
        self.take(&request.key, &chosen, &share);
        Ok(chosen)
    }

    /// Frees whatever `service` holds.
    pub fn release(&mut self, service: &ServiceKey) {
        let Some(addresses) = self.by_service.remove(service) else {
            return;
        };
        for address in addresses {
            self.drop_holder(address, service);
        }
    }

    /// Usage of the pool named `name` (zeros if unknown).
    pub fn usage(&self, name: &str) -> Usage {
        let Some(pool) = self.pools.iter().find(|p| p.name == name) else {
            return Usage::default();
        };
        let mut usage = Usage::default();
        for range in &pool.ranges {
            let held = self
                .holders
                .range(range.first()..=range.last())
                .filter(|(a, _)| !pool.avoid_buggy_ips || !is_buggy(**a))
                .count() as u64;
            let mut size = range.size();
            if pool.avoid_buggy_ips && range.family() == Family::V4 {
                size -= buggy_count(range);
            }
            let free = u64::try_from(size.saturating_sub(u128::from(held))).unwrap_or(u64::MAX);
            match range.family() {
                Family::V4 => {
                    usage.assigned_v4 += held;
                    usage.available_v4 = usage.available_v4.saturating_add(free);
                }
                Family::V6 => {
                    usage.assigned_v6 += held;
                    usage.available_v6 = usage.available_v6.saturating_add(free);
                }
            }
        }
        usage
    }

    /// One address of `family` for `request`.
    fn choose(
        &mut self,
        request: &Request,
        share: &Share,
        family: Family,
        held: &[IpAddr],
        admits: &impl Fn(&PoolDef) -> bool,
    ) -> Result<IpAddr, AllocError> {
        let allowed = |pool: &PoolDef| match &request.pool {
            Some(name) => &pool.name == name,
            None => admits(pool),
        };
        // 1. A specific address was asked for.
        if let Some(address) = request.requested.iter().find(|a| Family::of(**a) == family) {
            if !held.contains(address) {
                if !self
                    .pools
                    .iter()
                    .any(|p| p.contains(*address) && allowed(p))
                {
                    return Err(AllocError::OutsidePools(*address));
                }
                self.check_share(*address, &request.key, share)?;
            }
            return Ok(*address);
        }
        // 2. Keep what is held if it still fits (even if its pool lost it: never yank silently).
        if let Some(address) = held.iter().find(|a| Family::of(**a) == family)
            && (request.pool.is_none() || self.pool_of(*address).is_some_and(allowed))
            && self.check_share(*address, &request.key, share).is_ok()
        {
            return Ok(*address);
        }
        // 3. Join a Service with the same sharing key.
        if share.sharing_key.is_some() {
            let joinable = self.holders.iter().find(|(address, holders)| {
                Family::of(**address) == family
                    && self.pool_of(**address).is_some_and(allowed)
                    && holders
                        .iter()
                        .all(|(key, other)| key == &request.key || share.clash(other).is_none())
            });
            if let Some((address, _)) = joinable {
                return Ok(*address);
            }
        }
        // 4. A free address from an eligible pool, pools in name order, ranges in the order given.
        let candidates: Vec<usize> = (0..self.pools.len())
            .filter(|i| {
                let pool = &self.pools[*i];
                pool.has_family(family)
                    && allowed(pool)
                    && (request.pool.is_some() || pool.auto_assign)
            })
            .collect();
        if candidates.is_empty() {
            return Err(AllocError::NoPool(family));
        }
        for index in &candidates {
            if let Some(address) = self.free_in(*index, family) {
                return Ok(address);
            }
        }
        Err(AllocError::Exhausted {
            family,
            pools: candidates
                .iter()
                .map(|i| self.pools[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn free_in(&mut self, pool_index: usize, family: Family) -> Option<IpAddr> {
        let pool = &self.pools[pool_index];
        for range in pool.ranges.iter().filter(|r| r.family() == family) {
            let start = self.hints.get(range).copied().unwrap_or(range.first());
            let found = range.iter_from(start).find(|a| {
                !self.holders.contains_key(a) && (!pool.avoid_buggy_ips || !is_buggy(*a))
            });
            match found {
                Some(address) => {
                    self.hints.insert(*range, address);
                    return Some(address);
                }
                None => {
                    self.hints.insert(*range, range.last());
                }
            }
        }
        None
    }

    fn check_share(
        &self,
        address: IpAddr,
        key: &ServiceKey,
        share: &Share,
    ) -> Result<(), AllocError> {
        let Some(holders) = self.holders.get(&address) else {
            return Ok(());
        };
        for (holder, other) in holders.iter().filter(|(k, _)| *k != key) {
            if let Some(reason) = share.clash(other) {
                return Err(AllocError::Taken {
                    address,
                    holder: holder.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Makes `addresses` exactly what `service` holds.
    fn take(&mut self, service: &ServiceKey, addresses: &[IpAddr], share: &Share) {
        // The common case in a pass: a Service keeps exactly what it holds, on the same terms.
        let unchanged = self
            .by_service
            .get(service)
            .is_some_and(|held| held == addresses)
            && addresses
                .iter()
                .all(|a| self.holders.get(a).and_then(|h| h.get(service)) == Some(share));
        if unchanged {
            return;
        }
        let keep: BTreeSet<IpAddr> = addresses.iter().copied().collect();
        let previous = self.by_service.remove(service).unwrap_or_default();
        for address in previous.iter().filter(|a| !keep.contains(a)) {
            self.drop_holder(*address, service);
        }
        for address in addresses {
            self.holders
                .entry(*address)
                .or_default()
                .insert(service.to_owned(), share.clone());
        }
        if !addresses.is_empty() {
            self.by_service
                .insert(service.to_owned(), addresses.to_vec());
        }
    }

    fn drop_holder(&mut self, address: IpAddr, service: &ServiceKey) {
        if let Some(holders) = self.holders.get_mut(&address) {
            holders.remove(service);
            if holders.is_empty() {
                self.holders.remove(&address);
                // The freed address becomes the first candidate again in its ranges.
                for pool in &self.pools {
                    for range in pool.ranges.iter().filter(|r| r.contains(address)) {
                        if let Some(hint) = self.hints.get_mut(range)
                            && address < *hint
                        {
                            *hint = address;
                        }
                    }
                }
            }
        }
    }
}

/// IPv4 addresses ending in .0 or .255 in `range`.
fn buggy_count(range: &AddressRange) -> u128 {
    let (IpAddr::V4(first), IpAddr::V4(last)) = (range.first(), range.last()) else {
        return 0;
    };
    let (first, last) = (u128::from(u32::from(first)), u128::from(u32::from(last)));
    // Numbers n in [first, last] with n mod 256 == r, for r in {0, 255}.
    let count = |r: u128| {
        let upto = |x: u128| if x < r { 0 } else { (x - r) / 256 + 1 };
        upto(last) - if first == 0 { 0 } else { upto(first - 1) }
    };
    count(0) + count(255)
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
