//! The `throttle-group` user-creatable object (QEMU 7.2
//! block/throttle-groups.c): `-object throttle-group,id=ID,...` and QMP
//! `object-add`. Its limits come as `limits` (a ThrottleLimits) and as the
//! unstable `x-*` properties; `throttle` filter nodes name it by id and
//! share its buckets, as do drives whose `throttling.group` names it.

use serde_json::{Map, Value};

use crate::error::BlockError;
use crate::throttle::{Throttle, ThrottleConfig};

/// How a property sets a bucket (QEMU's `ThrottleParamCategory`).
#[derive(Clone, Copy)]
enum Cat {
    Avg,
    Max,
    BurstLength,
    IopsSize,
}

/// The ThrottleLimits member names, with the bucket each sets (QEMU's
/// `BucketType` order: bps, bps_rd, bps_wr, iops, iops_rd, iops_wr). The
/// `x-` properties are the same names with that prefix.
const PARAMS: &[(&str, usize, Cat)] = &[
    ("iops-total", 3, Cat::Avg),
    ("iops-total-max", 3, Cat::Max),
    ("iops-total-max-length", 3, Cat::BurstLength),
    ("iops-read", 4, Cat::Avg),
    ("iops-read-max", 4, Cat::Max),
    ("iops-read-max-length", 4, Cat::BurstLength),
    ("iops-write", 5, Cat::Avg),
    ("iops-write-max", 5, Cat::Max),
    ("iops-write-max-length", 5, Cat::BurstLength),
    ("bps-total", 0, Cat::Avg),
    ("bps-total-max", 0, Cat::Max),
    ("bps-total-max-length", 0, Cat::BurstLength),
    ("bps-read", 1, Cat::Avg),
    ("bps-read-max", 1, Cat::Max),
    ("bps-read-max-length", 1, Cat::BurstLength),
    ("bps-write", 2, Cat::Avg),
    ("bps-write-max", 2, Cat::Max),
    ("bps-write-max-length", 2, Cat::BurstLength),
    ("iops-size", 0, Cat::IopsSize),
];

/// An integer property: a JSON number (QMP) or a decimal string (the
/// `-object` keyval form).
fn int(key: &str, v: &Value) -> Result<i64, BlockError> {
    let bad = || {
        BlockError::new(format!(
            "Invalid parameter type for '{key}', expected: integer"
        ))
    };
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .ok_or_else(bad),
        Value::String(s) => s
            .parse::<i64>()
            .map_err(|_| BlockError::new(format!("Parameter '{key}' expects an int64 value"))),
        _ => Err(bad()),
    }
}

fn set(cfg: &mut ThrottleConfig, b: usize, cat: Cat, value: u64) {
    match cat {
        Cat::Avg => cfg.buckets[b].avg = value,
        Cat::Max => cfg.buckets[b].max = value,
        Cat::BurstLength => cfg.buckets[b].burst_length = value,
        Cat::IopsSize => cfg.op_size = value,
    }
}

/// `throttle_limits_to_config`: the members of a ThrottleLimits `l` set
/// their buckets in `cfg`.
fn apply_limits(cfg: &mut ThrottleConfig, l: &Value, prefix: &str) -> Result<(), BlockError> {
    let Value::Object(l) = l else {
        let what = prefix.strip_suffix('.').unwrap_or("value");
        return Err(BlockError::new(format!(
            "Invalid parameter type for '{what}', expected: object"
        )));
    };
    if let Some(k) = l.keys().find(|k| !PARAMS.iter().any(|p| p.0 == k.as_str())) {
        return Err(BlockError::new(format!(
            "Parameter '{prefix}{k}' is unexpected"
        )));
    }
    for &(name, b, cat) in PARAMS {
        if let Some(v) = l.get(name) {
            let v = int(&format!("{prefix}{name}"), v)?;
            if matches!(cat, Cat::BurstLength) && !(0..=u32::MAX as i64).contains(&v) {
                return Err(BlockError::new(format!(
                    "{name} value must be in the range [0, {}]",
                    u32::MAX
                )));
            }
            set(cfg, b, cat, v as u64);
        }
    }
    Ok(())
}

/// The limits of `props` (the object's properties besides `qom-type` and
/// `id`), checked as QEMU does: `limits` first (`throttle_limits_to_config`,
/// where a negative value becomes a huge one that `throttle_is_valid`
/// refuses), then each `x-` property (`throttle_group_set`). The whole is
/// checked when the object is completed ([`ThrottleGroupObject::create`]).
pub fn parse_props(props: &Map<String, Value>) -> Result<ThrottleConfig, BlockError> {
    let mut cfg = ThrottleConfig::default();
    if let Some(l) = props.get("limits") {
        apply_limits(&mut cfg, l, "limits.")?;
    }
    for (k, v) in props {
        if k == "limits" {
            continue;
        }
        let Some(&(name, b, cat)) = k
            .strip_prefix("x-")
            .and_then(|n| PARAMS.iter().find(|p| p.0 == n))
        else {
            return Err(BlockError::new(format!("Parameter '{k}' is unexpected")));
        };
        let v = int(k, v)?;
        if v < 0 {
            return Err(BlockError::new("Property values cannot be negative"));
        }
        if matches!(cat, Cat::BurstLength) && v > u32::MAX as i64 {
            // QEMU's message, its missing space included.
            return Err(BlockError::new(format!(
                "x-{name} value must be in therange [0, {}]",
                u32::MAX
            )));
        }
        set(&mut cfg, b, cat, v as u64);
    }
    Ok(cfg)
}

/// A `throttle-group` object: it holds its group (as QEMU's object
/// reference does) until it is deleted.
pub struct ThrottleGroupObject {
    pub id: String,
    member: Throttle,
}

impl ThrottleGroupObject {
    /// `user_creatable_add_type` + `throttle_group_obj_complete`.
    pub fn create(id: &str, props: &Map<String, Value>) -> Result<Self, BlockError> {
        let cfg = parse_props(props)?;
        cfg.validate()?;
        Ok(ThrottleGroupObject {
            id: id.to_string(),
            member: Throttle::create(id, cfg)?,
        })
    }

    /// `throttle_group_can_be_deleted`: nothing but the object holds the
    /// group (no throttle node, no drive).
    pub fn in_use(&self) -> bool {
        self.member.members() > 1
    }

    /// The `limits` property (`throttle_config_to_limits`).
    pub fn limits(&self) -> Value {
        let cfg = self.member.config();
        let mut m = Map::new();
        for &(name, b, cat) in PARAMS {
            let k = &cfg.buckets[b];
            let v = match cat {
                Cat::Avg => k.avg,
                Cat::Max => k.max,
                Cat::BurstLength => k.burst_length,
                Cat::IopsSize => cfg.op_size,
            };
            m.insert(name.into(), v.into());
        }
        Value::Object(m)
    }

    /// `qom-set`: `limits` replaces the limits it names
    /// (`throttle_group_set_limits`, which QEMU does not check with
    /// `throttle_is_valid`; ferrovm does, so the buckets stay sound); the
    /// `x-` properties are fixed once the object exists.
    pub fn set_property(&self, name: &str, value: &Value) -> Option<Result<(), BlockError>> {
        if name == "limits" {
            let mut cfg = self.member.config();
            return Some(
                apply_limits(&mut cfg, value, "")
                    .and_then(|()| cfg.validate())
                    .map(|()| self.member.set_config(cfg)),
            );
        }
        let n = name.strip_prefix("x-")?;
        PARAMS.iter().find(|p| p.0 == n)?;
        Some(Err(BlockError::new(
            "Property cannot be set after initialization",
        )))
    }

    /// One `x-` property's value, or `None` for another name.
    pub fn property(&self, name: &str) -> Option<Value> {
        if name == "limits" {
            return Some(self.limits());
        }
        let n = name.strip_prefix("x-")?;
        self.limits().get(n).cloned()
    }
}

/// The user-creatable objects, as the block layer holds them: QMP
/// `object-add`/`object-del` and `-object` (qom/object_interfaces.c).
impl crate::BlockGraph {
    /// `user_creatable_add_type` for `qom-type` with id `id`: a
    /// `throttle-group` is created; another type from `-object` is only
    /// recorded (`cli` = true), and refused from QMP.
    pub fn object_add(
        &mut self,
        qom_type: &str,
        id: &str,
        props: &Map<String, Value>,
        cli: bool,
    ) -> Result<(), BlockError> {
        if !crate::graph::id_wellformed(id) {
            return Err(BlockError::new("Parameter 'id' expects an identifier"));
        }
        if self.object_type(id).is_some() {
            // object_property_try_add_child on the /objects container.
            return Err(BlockError::new(format!(
                "attempt to add duplicate property '{id}' to object (type 'container')"
            )));
        }
        if qom_type == "throttle-group" {
            let o = ThrottleGroupObject::create(id, props)?;
            self.throttle_groups.push(o);
            return Ok(());
        }
        if !cli {
            return Err(BlockError::new(format!(
                "ferrovm: object type '{qom_type}' is not supported by object-add (only throttle-group)"
            )));
        }
        self.other_objects
            .push((id.to_string(), qom_type.to_string()));
        Ok(())
    }

    /// `user_creatable_del`.
    pub fn object_del(&mut self, id: &str) -> Result<(), BlockError> {
        if let Some(i) = self.throttle_groups.iter().position(|o| o.id == id) {
            if self.throttle_groups[i].in_use() {
                return Err(BlockError::new(format!(
                    "object '{id}' is in use, can not be deleted"
                )));
            }
            self.throttle_groups.remove(i);
            return Ok(());
        }
        match self.object_type(id) {
            Some(t) => Err(BlockError::new(format!(
                "ferrovm: deleting an object of type '{t}' is not supported"
            ))),
            None => Err(BlockError::new(format!("object '{id}' not found"))),
        }
    }

    /// The QOM type of object `id`, if there is one.
    pub fn object_type(&self, id: &str) -> Option<String> {
        if self.throttle_groups.iter().any(|o| o.id == id) {
            return Some("throttle-group".into());
        }
        self.other_objects
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, t)| t.clone())
    }

    /// The `throttle-group` object `id`.
    pub fn throttle_group(&self, id: &str) -> Option<&ThrottleGroupObject> {
        self.throttle_groups.iter().find(|o| o.id == id)
    }

    /// Every object's id and type, in creation order within each kind.
    pub fn objects(&self) -> Vec<(String, String)> {
        self.throttle_groups
            .iter()
            .map(|o| (o.id.clone(), "throttle-group".to_string()))
            .chain(self.other_objects.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn err(v: Value) -> String {
        parse_props(&props(v))
            .and_then(|c| c.validate())
            .unwrap_err()
            .msg
    }

    /// The errors QEMU 7.2's object-add gives for the same properties.
    #[test]
    fn bad_properties_fail_as_qemu_does() {
        assert_eq!(
            err(json!({"limits": {"bps-total": 100, "bps-read": 5}})),
            "bps/iops/max total values and read/write values cannot be used at the same time"
        );
        assert_eq!(
            err(json!({"x-bps-total": -1})),
            "Property values cannot be negative"
        );
        assert_eq!(
            err(json!({"x-bps-total": "x"})),
            "Parameter 'x-bps-total' expects an int64 value"
        );
        assert_eq!(err(json!({"bogus": 1})), "Parameter 'bogus' is unexpected");
        assert_eq!(
            err(json!({"limits": {"iops-size": 5}})),
            "iops size requires an iops value to be set"
        );
    }

    #[test]
    fn both_forms_set_the_limits() {
        let c = parse_props(&props(json!({
            "limits": {"iops-total": 7},
            "x-bps-read": "1000",
            "x-bps-read-max": 2000,
            "x-bps-read-max-length": 3
        })))
        .unwrap();
        assert_eq!(c.buckets[3].avg, 7);
        assert_eq!(c.buckets[1].avg, 1000);
        assert_eq!(c.buckets[1].max, 2000);
        assert_eq!(c.buckets[1].burst_length, 3);
    }

    #[test]
    fn an_object_is_in_use_while_a_member_holds_its_group() {
        let o =
            ThrottleGroupObject::create("tgobj-test", &props(json!({"x-bps-total": 9}))).unwrap();
        assert_eq!(o.property("x-bps-total"), Some(json!(9)));
        assert_eq!(o.limits()["bps-total-max-length"], json!(1));
        assert!(!o.in_use());
        let e = ThrottleGroupObject::create("tgobj-test", &Map::new())
            .err()
            .unwrap();
        assert_eq!(e.msg, "A group with this name already exists");
        let m = Throttle::join("tgobj-test").unwrap();
        assert!(o.in_use());
        drop(m);
        assert!(!o.in_use());
        drop(o);
        assert!(!crate::throttle::group_exists("tgobj-test"));
    }
}
