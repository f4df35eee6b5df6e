//! The one intrusive doubly-linked list of the allocator: slabs on their class's lists,
//! a heap's segments, heaps in the pool, buddy spans and regions all use [`List`].
//!
//! A node carries its own [`Links`] (so no list allocates), and says where they are by
//! implementing [`Node`]. A node is on at most one list of a given kind at a time. The list
//! does no locking: whoever owns the list (a heap's owner, the holder of a lock) owns the
//! links of every node on it.

use core::ptr;

/// The links of a node (the previous and next nodes of its list, null at the ends).
pub struct Links<T> {
    next: *mut T,
    prev: *mut T,
}

impl<T> Links<T> {
    /// Links of a node on no list.
    pub const fn new() -> Self {
        Links {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        }
    }
}

/// A type whose values can be on a [`List`].
///
/// # Safety
/// `links(node)` must return the address of `node`'s own [`Links`] for every `node`,
/// computed from the address alone (it is called on nodes the list holds, and must not read
/// them), and distinct nodes must have distinct links.
pub unsafe trait Node: Sized {
    /// The address of `node`'s links.
    fn links(node: *mut Self) -> *mut Links<Self>;
}

/// An intrusive doubly-linked list, with its length.
pub struct List<T: Node> {
    head: *mut T,
    tail: *mut T,
    len: usize,
}

impl<T: Node> Default for List<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Node> List<T> {
    /// An empty list.
    pub const fn new() -> Self {
        List {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    /// Number of nodes on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the list holds no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first node, or null.
    pub fn head(&self) -> *mut T {
        self.head
    }

    /// The node after `node` on its list, or null.
    ///
    /// # Safety
    /// `node` must be on a list whose links the caller owns.
    pub unsafe fn next(node: *mut T) -> *mut T {
        // SAFETY: the caller's guarantee: `node` is valid and its links are ours to read.
        unsafe { (*T::links(node)).next }
    }

    /// Pushes `node` at the front.
    ///
    /// # Safety
    /// `node` must be valid and on no list of this kind.
    pub unsafe fn push_front(&mut self, node: *mut T) {
        // SAFETY: `node` is valid (caller), and the list's nodes are valid (invariant).
        unsafe {
            let links = T::links(node);
            (*links).prev = ptr::null_mut();
            (*links).next = self.head;
            if self.head.is_null() {
                self.tail = node;
            } else {
                (*T::links(self.head)).prev = node;
            }
        }
        self.head = node;
        self.len += 1;
    }

    /// Pushes `node` at the back.
    ///
    /// # Safety
    /// `node` must be valid and on no list of this kind.
    pub unsafe fn push_back(&mut self, node: *mut T) {
        // SAFETY: `node` is valid (caller), and the list's nodes are valid (invariant).
        unsafe {
            let links = T::links(node);
            (*links).next = ptr::null_mut();
            (*links).prev = self.tail;
            if self.tail.is_null() {
                self.head = node;
            } else {
                (*T::links(self.tail)).next = node;
            }
        }
        self.tail = node;
        self.len += 1;
    }

    /// Unlinks `node`.
    ///
    /// # Safety
    /// `node` must be on this list.
    pub unsafe fn remove(&mut self, node: *mut T) {
        // SAFETY: `node` and its neighbours are on this list, hence valid.
        unsafe {
            let links = T::links(node);
            let (prev, next) = ((*links).prev, (*links).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*T::links(prev)).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*T::links(next)).prev = prev;
            }
            (*links).next = ptr::null_mut();
            (*links).prev = ptr::null_mut();
        }
        self.len -= 1;
    }

    /// Unlinks and returns the first node, or null.
    pub fn pop_front(&mut self) -> *mut T {
        let node = self.head;
        if !node.is_null() {
            // SAFETY: the head is on this list.
            unsafe { self.remove(node) };
        }
        node
    }

    /// Unlinks and returns the last node, or null.
    pub fn pop_back(&mut self) -> *mut T {
        let node = self.tail;
        if !node.is_null() {
            // SAFETY: the tail is on this list.
            unsafe { self.remove(node) };
        }
        node
    }

    /// Calls `f` on every node; `f` may unlink the node it is given (the next one is read
    /// before the call) but no other.
    pub fn for_each(&self, mut f: impl FnMut(*mut T)) {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: nodes on the list are valid, and the list's owner owns their links.
            let next = unsafe { Self::next(cur) };
            f(cur);
            cur = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Item {
        links: Links<Item>,
        value: u32,
    }

    // SAFETY: `links` is the node's own field, found by address arithmetic only.
    unsafe impl Node for Item {
        fn links(node: *mut Self) -> *mut Links<Self> {
            node.cast::<u8>()
                .wrapping_add(core::mem::offset_of!(Item, links))
                .cast()
        }
    }

    fn values(list: &List<Item>) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: the test's items outlive the list.
        list.for_each(|n| out.push(unsafe { (*n).value }));
        out
    }

    #[test]
    fn pushes_removes_and_pops_keep_order_and_length() {
        let mut items: Vec<Item> = (0..4)
            .map(|value| Item {
                links: Links::new(),
                value,
            })
            .collect();
        let p: Vec<*mut Item> = items.iter_mut().map(|i| i as *mut Item).collect();
        let mut a = List::new();
        let mut b = List::new();
        // SAFETY: the items live for the whole test and are on at most one list.
        unsafe {
            a.push_back(p[0]);
            a.push_back(p[1]);
            a.push_front(p[2]);
            assert_eq!(values(&a), [2, 0, 1]);
            assert_eq!(a.len(), 3);
            a.remove(p[0]);
            b.push_front(p[0]);
            assert_eq!(a.pop_back(), p[1]);
            assert_eq!(a.pop_front(), p[2]);
            assert!(a.is_empty() && a.pop_front().is_null() && a.pop_back().is_null());
            b.push_back(p[3]);
            assert_eq!(values(&b), [0, 3]);
            assert_eq!(List::next(p[0]), p[3]);
        }
        assert_eq!(b.len(), 2);
    }
}
