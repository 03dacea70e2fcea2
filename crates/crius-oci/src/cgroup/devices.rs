//! The cgroup v1 device controller's semantics, so that v2 (which has only a BPF program)
//! enforces an OCI device rule list exactly as v1's `devices.allow`/`devices.deny` files
//! do with the same rules written in order (what [`super::V1Manager`] does).
//!
//! v1 keeps, per cgroup, a default behaviour and a list of exceptions
//! (Documentation/admin-guide/cgroup-v1/devices.rst; security/device_cgroup.c):
//!
//! - A rule of type `a` (or without a type) empties the list and sets the default:
//!   allow-all for an allow, deny-all for a deny. The kernel ignores its numbers and
//!   access: `a 1:3 r` is `a`.
//! - A rule going against the default (an allow under deny-all, a deny under allow-all)
//!   adds an exception; one with the same type, major and minor (a wildcard only equals a
//!   wildcard) takes the new access bits instead, so `c 1:3 r` then `c 1:3 w` make one
//!   `c 1:3 rw` exception.
//! - A rule going the default's way takes its bits away from the exception with exactly
//!   its type, major and minor, dropping it when none are left. It never touches other
//!   exceptions, not even a wildcard one covering the device.
//! - An access of some bits to a device is allowed, under deny-all, when **one**
//!   exception matching the device (type, major or `*`, minor or `*`) holds all of them;
//!   under allow-all, when no matching exception holds any of them.
//!
//! A new v1 cgroup starts with its parent's list (allow-all under an unrestricted parent).
//! On v2 the parent's programs run as well, so the emulation starts from allow-all and
//! the parents keep their own restrictions, as in v1.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// `m`, `r`, `w` as the kernel's BPF device context encodes them
/// (`BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`).
pub(crate) const ACC_MKNOD: u8 = 1;
pub(crate) const ACC_READ: u8 = 2;
pub(crate) const ACC_WRITE: u8 = 4;
pub(crate) const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// A device's type; the values are `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevType {
    Block = 1,
    Char = 2,
}

/// One entry of the exception list; `None` numbers are wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exception {
    pub(crate) typ: DevType,
    pub(crate) major: Option<u32>,
    pub(crate) minor: Option<u32>,
    /// `ACC_*` bits, never 0 (an exception left without bits is removed).
    pub(crate) access: u8,
}

impl Exception {
    fn same_device(&self, other: &Exception) -> bool {
        self.typ == other.typ && self.major == other.major && self.minor == other.minor
    }

    #[cfg(test)]
    fn covers(&self, typ: DevType, major: u32, minor: u32) -> bool {
        self.typ == typ
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// The state of a v1 device cgroup after a list of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceAccess {
    /// allow-all (true) or deny-all (false) for devices no exception names.
    pub(crate) default_allow: bool,
    /// Allows under deny-all, denies under allow-all.
    pub(crate) exceptions: Vec<Exception>,
}

/// A rule taken apart: `None` type is `a`.
struct Rule {
    allow: bool,
    exception: Option<Exception>,
}

impl DeviceAccess {
    /// The state after writing `rules` in order into a new cgroup under an unrestricted
    /// parent. A rule v1 would refuse (access letters other than `rwm`, a number above
    /// 2^32-1) is an error here too.
    pub(crate) fn from_rules(rules: &[LinuxDeviceCgroup]) -> Result<Self> {
        let mut state = DeviceAccess {
            default_allow: true,
            exceptions: Vec::new(),
        };
        for rule in rules {
            state.apply(rule)?;
        }
        Ok(state)
    }

    fn apply(&mut self, rule: &LinuxDeviceCgroup) -> Result<()> {
        let rule = parse(rule)?;
        let Some(ex) = rule.exception else {
            self.default_allow = rule.allow;
            self.exceptions.clear();
            return Ok(());
        };
        if rule.allow != self.default_allow {
            match self.exceptions.iter_mut().find(|e| e.same_device(&ex)) {
                Some(e) => e.access |= ex.access,
                None => self.exceptions.push(ex),
            }
        } else {
            for e in self.exceptions.iter_mut().filter(|e| e.same_device(&ex)) {
                e.access &= !ex.access;
            }
            self.exceptions.retain(|e| e.access != 0);
        }
        Ok(())
    }

    /// Whether an access of `access` bits to device `typ major:minor` is allowed: the
    /// kernel's v1 check, against which the compiled v2 program is tested.
    #[cfg(test)]
    pub(crate) fn permits(&self, typ: DevType, major: u32, minor: u32, access: u8) -> bool {
        let mut matching = self
            .exceptions
            .iter()
            .filter(|e| e.covers(typ, major, minor));
        if self.default_allow {
            !matching.any(|e| e.access & access != 0)
        } else {
            matching.any(|e| access & !e.access == 0)
        }
    }
}

fn parse(rule: &LinuxDeviceCgroup) -> Result<Rule> {
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => {
            return Ok(Rule {
                allow: rule.allow(),
                exception: None,
            })
        }
        Some(LinuxDeviceType::B) => DevType::Block,
        // As the v1 files get them (`device_rule_line`): u and p are written as c.
        Some(LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::P) => DevType::Char,
    };
    let number = |n: Option<i64>| -> Result<Option<u32>> {
        match n.filter(|n| *n >= 0) {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| Error::InvalidSpec(format!("device rule number {n} is above 2^32-1"))),
        }
    };
    let access = match rule.access().as_deref().filter(|a| !a.is_empty()) {
        None => ACC_ALL,
        Some(letters) => letters.chars().try_fold(0, |m, c| match c {
            'm' => Ok(m | ACC_MKNOD),
            'r' => Ok(m | ACC_READ),
            'w' => Ok(m | ACC_WRITE),
            _ => Err(Error::InvalidSpec(format!(
                "device rule access {letters:?}: use the letters r, w and m"
            ))),
        })?,
    };
    Ok(Rule {
        allow: rule.allow(),
        exception: Some(Exception {
            typ,
            major: number(rule.major())?,
            minor: number(rule.minor())?,
            access,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DevType::{Block, Char};

    fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(v).unwrap()
    }

    fn state(v: serde_json::Value) -> DeviceAccess {
        DeviceAccess::from_rules(&rules(v)).unwrap()
    }

    const RW: u8 = ACC_READ | ACC_WRITE;

    #[test]
    fn split_allows_of_one_device_add_up() {
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ]));
        assert!(!s.default_allow);
        assert_eq!(
            s.exceptions,
            [Exception {
                typ: Char,
                major: Some(1),
                minor: Some(3),
                access: RW
            }]
        );
        assert!(s.permits(Char, 1, 3, RW));
        assert!(!s.permits(Char, 1, 3, ACC_MKNOD));
        assert!(!s.permits(Block, 1, 3, ACC_READ));
    }

    #[test]
    fn a_later_deny_takes_away_only_its_bits() {
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ]));
        assert!(s.permits(Char, 1, 3, ACC_READ));
        assert!(s.permits(Char, 1, 3, ACC_MKNOD));
        assert!(!s.permits(Char, 1, 3, ACC_WRITE));
        assert!(!s.permits(Char, 1, 3, RW));
        // denying the remaining bits removes the exception altogether
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]));
        assert!(s.exceptions.is_empty());
    }

    #[test]
    fn wildcards_are_their_own_entries() {
        // An allow for c 1:* and one for c 1:3 do not merge: a read-write open of 1:3
        // needs one entry holding both bits, as in v1.
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "r"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ]));
        assert_eq!(s.exceptions.len(), 2);
        assert!(s.permits(Char, 1, 7, ACC_READ));
        assert!(s.permits(Char, 1, 3, ACC_WRITE));
        assert!(!s.permits(Char, 1, 3, RW));
        // A deny of one device does not carve it out of a wildcard allow.
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": false, "type": "c", "major": 136, "minor": 2, "access": "rwm"}
        ]));
        assert!(s.permits(Char, 136, 2, RW));
        // ...but a wildcard deny of the wildcard's exact shape does.
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": false, "type": "c", "major": 136, "minor": -1, "access": "w"}
        ]));
        assert!(s.permits(Char, 136, 2, ACC_READ));
        assert!(!s.permits(Char, 136, 2, ACC_WRITE));
    }

    #[test]
    fn an_all_rule_resets_the_list_whatever_else_it_says() {
        let s = state(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "a", "major": 5, "access": "r"}
        ]));
        assert!(s.default_allow);
        assert!(s.exceptions.is_empty());
        assert!(s.permits(Block, 8, 0, ACC_ALL));
        let s = state(serde_json::json!([{"allow": false, "access": "m"}]));
        assert!(!s.default_allow);
        assert!(!s.permits(Char, 1, 3, ACC_READ));
    }

    #[test]
    fn under_allow_all_denies_are_exceptions_and_allows_remove_them() {
        assert!(state(serde_json::json!([])).permits(Char, 10, 229, ACC_ALL));
        let s = state(serde_json::json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rw"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}
        ]));
        assert!(s.permits(Char, 10, 229, ACC_READ));
        assert!(s.permits(Char, 10, 229, ACC_MKNOD));
        // any denied bit in the request refuses it
        assert!(!s.permits(Char, 10, 229, RW));
        assert!(s.permits(Char, 10, 230, RW));
        let s = state(serde_json::json!([
            {"allow": false, "type": "b", "access": "w"}
        ]));
        assert!(!s.permits(Block, 8, 0, ACC_WRITE));
        assert!(s.permits(Block, 8, 0, ACC_READ));
        assert!(s.permits(Char, 8, 0, ACC_WRITE));
    }

    #[test]
    fn rules_v1_refuses_are_refused() {
        let bad_access = rules(serde_json::json!([
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rx"}
        ]));
        assert!(DeviceAccess::from_rules(&bad_access).is_err());
        let too_big = rules(serde_json::json!([
            {"allow": true, "type": "c", "major": 1u64 << 32, "access": "r"}
        ]));
        assert!(DeviceAccess::from_rules(&too_big).is_err());
        // an empty access is rwm, as the v1 files get it
        let s = state(serde_json::json!([
            {"allow": false},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": ""}
        ]));
        assert_eq!(s.exceptions[0].access, ACC_ALL);
    }
}
