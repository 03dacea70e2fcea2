//! A container's device rules as its scope's `DevicePolicy=` and `DeviceAllow=`
//! (systemd.resource-control(5)).
//!
//! Why systemd must be told: whenever systemd realizes a unit's cgroup settings (at
//! start, on `daemon-reload`, on `SetUnitProperties`) it applies its device settings
//! too, and the default (`DevicePolicy=auto` without `DeviceAllow=`) means "every
//! device". On cgroup v1 it writes `a *:* rwm` into the scope's `devices.allow`, which
//! wipes the rules crius wrote and opens every device node to the container. On v2
//! systemd attaches a device program of its own beside crius's; the kernel allows an
//! access only when every attached program does, so there systemd's list must allow at
//! least what the container's rules allow.
//!
//! The rules are first reduced to the exception list v1 holds after them
//! ([`DeviceAccess`], the same emulation the v2 program is compiled from), which folds
//! in every deny the rules make:
//!
//! - deny-all with allow exceptions (every container crius makes that is not
//!   privileged): `DevicePolicy=strict` and one `DeviceAllow=` entry per exception:
//!   `/dev/char/M:m` or `/dev/block/M:m` for one device (systemd parses these paths
//!   instead of looking the node up, so no node needs to exist), `char-*`/`block-*`
//!   for a type's every device, and `char-<group>`/`block-<group>` for a major's every
//!   minor, where the group is the major's name in `/proc/devices`;
//! - allow-all without exceptions (a privileged container): `DevicePolicy=auto` and an
//!   empty `DeviceAllow=` (which also clears a list set earlier);
//! - allow-all with deny exceptions: refused, as `DeviceAllow=` is an allow list only
//!   and any approximation either opens the denied devices (v1) or closes every other
//!   one (v2).
//!
//! An exception systemd cannot name exactly (a major without a group of its own in
//! `/proc/devices`, a wildcard major with a given minor) is left out on v1, where
//! systemd's list replaces crius's after a reload: the container then loses that device
//! rather than gaining others. On v2 it is widened to the smallest name covering it
//! (the shared group, or the type's every device), as crius's own program still
//! enforces the exact rule there, and leaving it out would deny what the rules allow.
//! A major with no name at all is left out on both (there is nothing to widen to but
//! every device of the type).

use oci_spec::runtime::LinuxDeviceCgroup;

use crate::cgroup::devices::{DevType, DeviceAccess, Exception, ACC_MKNOD, ACC_READ, ACC_WRITE};
use crate::error::{Error, Result};

/// `DevicePolicy=` and `DeviceAllow=` for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceSettings {
    /// `strict` or `auto`.
    pub(crate) policy: &'static str,
    /// (device specifier, access letters), in the rules' order.
    pub(crate) allow: Vec<(String, String)>,
}

/// The device groups of `/proc/devices`: each registered major with its driver's name
/// (a major can have several names, and a name several majors: `sd` holds 8, 65-71,
/// 128-135).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeviceGroups {
    entries: Vec<(DevType, u32, String)>,
}

/// How a major's every minor can be named.
#[derive(Debug, PartialEq, Eq)]
enum Group<'a> {
    /// A name only this major has.
    Exact(&'a str),
    /// Only names other majors share too.
    Shared(&'a str),
    /// No usable name.
    Unnamed,
}

impl DeviceGroups {
    /// The host's groups. An unreadable file is no group at all (every wildcard-minor
    /// exception then goes unnamed), said at debug level.
    pub(crate) fn read() -> Self {
        match std::fs::read_to_string("/proc/devices") {
            Ok(text) => Self::parse(&text),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read /proc/devices; no device group names");
                Self::default()
            }
        }
    }

    /// Parses `/proc/devices`: a `Character devices:` and a `Block devices:` section of
    /// `<major> <name>` lines.
    pub(crate) fn parse(text: &str) -> Self {
        let mut typ = None;
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            match line {
                "Character devices:" => typ = Some(DevType::Char),
                "Block devices:" => typ = Some(DevType::Block),
                _ => {
                    let (Some(t), Some((major, name))) = (typ, line.split_once(' ')) else {
                        continue;
                    };
                    if let Ok(major) = major.parse() {
                        entries.push((t, major, name.trim().to_string()));
                    }
                }
            }
        }
        Self { entries }
    }

    fn group(&self, typ: DevType, major: u32) -> Group<'_> {
        // systemd matches the name as a glob pattern (fnmatch) against every line: a
        // name holding a glob character would match names it was not meant to.
        let usable = |n: &str| !n.is_empty() && !n.contains(['*', '?', '[', '\\']);
        let names: Vec<&str> = self
            .entries
            .iter()
            .filter(|(t, m, n)| *t == typ && *m == major && usable(n))
            .map(|(_, _, n)| n.as_str())
            .collect();
        let only_this_major = |name: &&str| {
            self.entries
                .iter()
                .all(|(t, m, n)| *t != typ || n != name || *m == major)
        };
        let exact: Vec<&str> = names.iter().copied().filter(only_this_major).collect();
        // A plain name reads best in the unit (`char-tty`, not `char-/dev/vc/0`).
        fn best<'a>(names: &[&'a str]) -> Option<&'a str> {
            names
                .iter()
                .find(|n| !n.contains('/'))
                .or(names.first())
                .copied()
        }
        if let Some(name) = best(&exact) {
            return Group::Exact(name);
        }
        match best(&names) {
            Some(name) => Group::Shared(name),
            None => Group::Unnamed,
        }
    }
}

/// The settings for `rules`, a container's complete device rule list (as written to
/// the v1 files, in order). `unified` says whether the host runs cgroup v2, where
/// systemd's program runs beside crius's (see the module docs for what that changes).
pub(crate) fn device_settings(
    rules: &[LinuxDeviceCgroup],
    groups: &DeviceGroups,
    unified: bool,
) -> Result<DeviceSettings> {
    let access = DeviceAccess::from_rules(rules)?;
    if access.default_allow {
        if !access.exceptions.is_empty() {
            return Err(Error::InvalidSpec(
                "device rules that allow every device except some cannot be given to \
                 systemd, whose DeviceAllow= is an allow list: start the rules with a deny \
                 of all devices and allow each device the container needs, or use the \
                 cgroupfs driver"
                    .into(),
            ));
        }
        return Ok(DeviceSettings {
            policy: "auto",
            allow: Vec::new(),
        });
    }
    let allow = access
        .exceptions
        .iter()
        .filter_map(|e| Some((specifier(e, groups, unified)?, letters(e.access))))
        .collect();
    Ok(DeviceSettings {
        policy: "strict",
        allow,
    })
}

/// The `DeviceAllow=` specifier naming exception `e`, `None` to leave it out.
fn specifier(e: &Exception, groups: &DeviceGroups, unified: bool) -> Option<String> {
    let (dir, class) = match e.typ {
        DevType::Char => ("/dev/char", "char"),
        DevType::Block => ("/dev/block", "block"),
    };
    let rule = || {
        let n = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!("{class} {}:{}", n(e.major), n(e.minor))
    };
    match (e.major, e.minor) {
        (Some(major), Some(minor)) => Some(format!("{dir}/{major}:{minor}")),
        (None, None) => Some(format!("{class}-*")),
        (Some(major), None) => match groups.group(e.typ, major) {
            Group::Exact(name) => Some(format!("{class}-{name}")),
            Group::Shared(name) if unified => {
                tracing::debug!(rule = %rule(), group = name, "systemd gets the whole device group, which other majors share");
                Some(format!("{class}-{name}"))
            }
            Group::Shared(name) => {
                tracing::warn!(rule = %rule(), group = name, "systemd cannot name this major alone (its group in /proc/devices has other majors too); after a daemon-reload the container loses these devices");
                None
            }
            Group::Unnamed => {
                tracing::debug!(rule = %rule(), "no name for this major in /proc/devices; systemd is not told of it");
                None
            }
        },
        (None, Some(_)) if unified => Some(format!("{class}-*")),
        (None, Some(_)) => {
            tracing::warn!(rule = %rule(), "systemd cannot name one minor of every major; after a daemon-reload the container loses these devices");
            None
        }
    }
}

/// `ACC_*` bits as systemd's access letters.
fn letters(access: u8) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(bit, _)| access & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_DEVICES: &str = "Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  4 ttyS
  5 /dev/tty
  5 /dev/console
  5 /dev/ptmx
 10 misc
136 pts
180 usb
189 usb_device
226 drm
240 weird*

Block devices:
  8 sd
 65 sd
 66 sd
  7 loop
259 blkext
";

    fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(v).unwrap()
    }

    fn settings(v: serde_json::Value, unified: bool) -> DeviceSettings {
        device_settings(&rules(v), &DeviceGroups::parse(PROC_DEVICES), unified).unwrap()
    }

    fn allow(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(p, a)| (p.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn the_default_rules_become_a_strict_allow_list() {
        let mut all = rules(serde_json::json!([{"allow": false, "access": "rwm"}]));
        all.extend(crate::cgroup::default_device_rules());
        let s = device_settings(&all, &DeviceGroups::parse(PROC_DEVICES), false).unwrap();
        assert_eq!(s.policy, "strict");
        assert_eq!(
            s.allow,
            allow(&[
                ("char-*", "m"),
                ("block-*", "m"),
                ("/dev/char/1:3", "rwm"),
                ("/dev/char/1:5", "rwm"),
                ("/dev/char/1:7", "rwm"),
                ("/dev/char/1:8", "rwm"),
                ("/dev/char/1:9", "rwm"),
                ("/dev/char/5:0", "rwm"),
                ("/dev/char/5:2", "rwm"),
                ("char-pts", "rwm"),
            ])
        );
    }

    #[test]
    fn block_and_char_devices_get_their_own_paths_and_access() {
        let s = settings(
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"},
                {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "mw"},
                {"allow": true, "type": "c", "major": 1, "minor": 3},
                {"allow": true, "type": "b", "access": "m"}
            ]),
            false,
        );
        assert_eq!(
            s.allow,
            allow(&[
                ("/dev/block/8:0", "r"),
                ("/dev/char/10:200", "wm"),
                ("/dev/char/1:3", "rwm"),
                ("block-*", "m"),
            ])
        );
    }

    #[test]
    fn denies_the_emulation_folded_in_need_nothing() {
        // The write bit of 1:3 is taken back, 1:5 is allowed then denied outright, and a
        // later deny of the whole type with its own shape removes the wildcard allow.
        let s = settings(
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rw"},
                {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                {"allow": true, "type": "c", "access": "m"},
                {"allow": false, "type": "c", "access": "m"}
            ]),
            false,
        );
        assert_eq!(s.policy, "strict");
        assert_eq!(s.allow, allow(&[("/dev/char/1:3", "rm")]));
        // Deny-all with nothing allowed is strict with an empty list, not auto.
        let s = settings(serde_json::json!([{"allow": false, "access": "rwm"}]), true);
        assert_eq!((s.policy, s.allow.len()), ("strict", 0));
    }

    #[test]
    fn a_privileged_container_gets_the_auto_policy_and_no_list() {
        let mut all = rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "access": "rwm"}
        ]));
        all.extend(crate::cgroup::default_device_rules());
        let s = device_settings(&all, &DeviceGroups::parse(PROC_DEVICES), false).unwrap();
        assert_eq!(s.policy, "auto");
        assert!(s.allow.is_empty());
        // No rules at all (a cgroup left as its parent made it) is allow-all too.
        assert_eq!(settings(serde_json::json!([]), false).policy, "auto");
    }

    #[test]
    fn allow_all_but_some_is_refused_not_widened() {
        let err = device_settings(
            &rules(serde_json::json!([
                {"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwm"}
            ])),
            &DeviceGroups::parse(PROC_DEVICES),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
        assert!(err.to_string().contains("DeviceAllow="), "{err}");
        // A rule v1 would refuse is refused here as well.
        assert!(device_settings(
            &rules(serde_json::json!([{"allow": true, "type": "c", "major": 1, "access": "x"}])),
            &DeviceGroups::default(),
            false
        )
        .is_err());
    }

    #[test]
    fn wildcard_minors_are_named_by_their_proc_devices_group() {
        let groups = DeviceGroups::parse(PROC_DEVICES);
        assert_eq!(groups.group(DevType::Char, 136), Group::Exact("pts"));
        // Several names for one major: a plain one is preferred to a path-like one.
        assert_eq!(groups.group(DevType::Char, 4), Group::Exact("tty"));
        assert_eq!(groups.group(DevType::Char, 5), Group::Exact("/dev/tty"));
        // The block and char sections are apart: char 7 has no name, block 7 is loop.
        assert_eq!(groups.group(DevType::Char, 7), Group::Unnamed);
        assert_eq!(groups.group(DevType::Block, 7), Group::Exact("loop"));
        // `sd` holds three majors; a glob character makes a name unusable.
        assert_eq!(groups.group(DevType::Block, 65), Group::Shared("sd"));
        assert_eq!(groups.group(DevType::Char, 240), Group::Unnamed);

        let wildcards = serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 189, "access": "rw"},
            {"allow": true, "type": "c", "major": 4, "access": "rwm"},
            {"allow": true, "type": "b", "major": 7, "access": "r"},
            {"allow": true, "type": "b", "major": 8, "access": "r"},
            {"allow": true, "type": "c", "major": 511, "access": "r"},
            {"allow": true, "type": "c", "minor": 3, "access": "r"}
        ]);
        // v1: what systemd cannot name exactly is left out (the container loses it on a
        // reload rather than gaining the other `sd` majors or every char device).
        assert_eq!(
            settings(wildcards.clone(), false).allow,
            allow(&[
                ("char-usb_device", "rw"),
                ("char-tty", "rwm"),
                ("block-loop", "r"),
            ])
        );
        // v2: crius's own program still holds the exact rule, so systemd's is widened
        // rather than denying what the rules allow; an unnamed major stays out.
        assert_eq!(
            settings(wildcards, true).allow,
            allow(&[
                ("char-usb_device", "rw"),
                ("char-tty", "rwm"),
                ("block-loop", "r"),
                ("block-sd", "r"),
                ("char-*", "r"),
            ])
        );
    }

    #[test]
    fn proc_devices_parsing_skips_what_is_not_a_group() {
        let groups = DeviceGroups::parse("junk\n 12\nCharacter devices:\nx y\n 13 input\n");
        assert_eq!(
            groups,
            DeviceGroups {
                entries: vec![(DevType::Char, 13, "input".into())]
            }
        );
        assert_eq!(DeviceGroups::parse("").entries.len(), 0);
        // This host's file parses, and its pts major has its name.
        let host = DeviceGroups::read();
        assert_eq!(host.group(DevType::Char, 136), Group::Exact("pts"));
    }

    #[test]
    fn access_letters_are_in_systemds_order() {
        assert_eq!(letters(ACC_MKNOD | ACC_READ | ACC_WRITE), "rwm");
        assert_eq!(letters(ACC_MKNOD | ACC_WRITE), "wm");
        assert_eq!(letters(ACC_READ), "r");
    }
}
