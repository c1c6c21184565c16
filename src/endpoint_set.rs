//! Sets of endpoints by index, the width of every such set, and so the most endpoints
//! ringway routes to. A leaf: the catalogue, placement and configuration use it.

/// Most endpoints ringway can route to (the width of [`EndpointSet`]).
pub(crate) const MAX_ENDPOINTS: usize = 256;

/// A set of endpoint indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EndpointSet([u64; MAX_ENDPOINTS / 64]);

impl EndpointSet {
    pub(crate) fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    #[inline]
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn union(mut self, other: EndpointSet) -> EndpointSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }

    pub(crate) fn intersection(mut self, other: EndpointSet) -> EndpointSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a &= b;
        }
        self
    }

    /// The members of `self` that are not in `other`.
    #[inline]
    pub(crate) fn minus(mut self, other: EndpointSet) -> EndpointSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a &= !b;
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The members, in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_ENDPOINTS).filter(|&i| self.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_sets() {
        let mut s = EndpointSet::default();
        assert!(s.is_empty());
        s.insert(0);
        s.insert(255);
        assert!(s.contains(255) && s.contains(0) && !s.contains(64));
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 255]);
        let mut t = EndpointSet::default();
        t.insert(255);
        t.insert(3);
        assert_eq!(s.minus(t).iter().collect::<Vec<_>>(), [0]);
        assert_eq!(s.intersection(t).iter().collect::<Vec<_>>(), [255]);
    }
}
