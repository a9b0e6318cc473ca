//! The upstream device plugin's `config.json`, decoded with Go `encoding/json` semantics and
//! validated the way upstream's `ValidConfig` does — plus the checks upstream forgot.
//!
//! Go decoding rules copied on purpose (users and the sriov-network-operator depend on them):
//! keys match case-insensitively, unknown keys are ignored (their values checked for syntax only,
//! see [`Shape`]), the last duplicate key wins, `null`
//! leaves a scalar unchanged and empties a list, `selectors` is an object or a list of objects.
//!
//! Where upstream fails badly we differ, and say so in the error:
//! - a missing or `null` `selectors` makes upstream panic; here it is an error;
//! - a type error (`"vendors": "8086"`) makes upstream drop that resource with a log line; here the
//!   whole configuration is refused, naming the field, so a typo never silently loses a pool;
//! - a malformed `#` range (`ens1f0#1-x`) silently deselects devices upstream; here it is an error;
//! - an unknown `vdpaType` selects nothing upstream; here it is an error;
//! - a `null` selector inside a list makes upstream panic (a nil pointer); here it is an error;
//! - resource names and prefixes that kubelet would refuse at registration (`-x`, `Intel.com`) are
//!   refused here, up front.
//!
//! Where upstream silently selects nothing we accept the configuration, as upstream, but add a
//! note (a warning in the agent's log): a value that no sysfs text can equal (`"vendors":
//! ["15B3"]`, `"pciAddresses": ["3b:00.2"]`, `"pKeys": ["0x1"]`).

use std::collections::BTreeMap;

use crate::json::{Json, Shape, key_matches};
use crate::range::PfSelector;

/// What is wrong with the configuration: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    /// Path of the offending field (`resourceList[1].selectors[0].vendors`), empty for the whole
    /// document.
    pub field: String,
    /// The problem, with the offending value and the fix.
    pub message: String,
}

impl SettingsProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SettingsProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The three device types upstream supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// PCI network functions (class 0x02).
    NetDevice,
    /// PCI accelerators (class 0x12).
    Accelerator,
    /// Auxiliary network devices (sub-functions of class 0x02 parents).
    AuxNetDevice,
}

/// Which vDPA bus driver a selector asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VdpaType {
    /// `vhost_vdpa`
    Vhost,
    /// `virtio_vdpa`
    Virtio,
}

/// One `resourceList` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `<prefix>/<resourceName>`.
    pub resource_name: String,
    /// The device type.
    pub device_type: DeviceType,
    /// `excludeTopology`.
    pub exclude_topology: bool,
    /// The selectors, in order (an object counts as a list of one).
    pub selectors: Vec<Selector>,
    /// `additionalInfo`: key (`*` or a PCI address) to extra key/value pairs.
    pub additional_info: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

/// One selector object. Empty lists mean "no filter". Keys that the resource's device type does
/// not know are ignored, as upstream ignores them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// `vendors`
    pub vendors: Vec<String>,
    /// `devices`
    pub devices: Vec<String>,
    /// `drivers`
    pub drivers: Vec<String>,
    /// `pciAddresses` (netDevice, accelerator)
    pub pci_addresses: Vec<String>,
    /// `acpiIndexes` (netDevice only; parsed but unused for auxNetDevice, as upstream)
    pub acpi_indexes: Vec<String>,
    /// `pfNames` (netDevice, auxNetDevice)
    pub pf_names: Vec<PfSelector>,
    /// `rootDevices` (netDevice, auxNetDevice)
    pub root_devices: Vec<PfSelector>,
    /// `linkTypes` (netDevice, auxNetDevice)
    pub link_types: Vec<String>,
    /// `ddpProfiles` (netDevice)
    pub ddp_profiles: Vec<String>,
    /// `pKeys` (netDevice)
    pub pkeys: Vec<String>,
    /// `isRdma` (netDevice, auxNetDevice)
    pub is_rdma: bool,
    /// `needVhostNet` (netDevice only: upstream's auxNetDevice selectors have no such field, so the
    /// key is ignored there like any unknown key)
    pub need_vhost_net: bool,
    /// `vdpaType` (netDevice)
    pub vdpa_type: Option<VdpaType>,
    /// `auxTypes` (auxNetDevice, required)
    pub aux_types: Vec<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The resources in configuration order (first match wins across them).
    pub resources: Vec<Resource>,
    /// Warnings for the operator's log, each a sentence, about what upstream accepts without a
    /// word but is most likely a mistake: keys ignored as upstream ignores them (a misspelled
    /// selector key, `"pfNamez"`, silently widens a pool) and selector values that can never match
    /// a device (`"vendors": ["15B3"]` silently empties one).
    pub notes: Vec<String>,
}

/// Parses and validates `config.json` text. Empty (or all-whitespace) text means "no resources".
pub fn parse(text: &str, default_prefix: &str) -> Result<Config, SettingsProblem> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let doc = Json::parse(text, CONFIG_SHAPE).map_err(|e| {
        SettingsProblem::new(
            "",
            format!(
                "the configuration is not valid JSON: {e} (strict JSON: no comments, no trailing commas)"
            ),
        )
    })?;
    let Json::Object(entries) = doc else {
        return Err(SettingsProblem::new(
            "",
            format!(
                "the configuration must be an object like {{\"resourceList\": [...]}}, got {}",
                doc.type_name()
            ),
        ));
    };
    let mut notes = Vec::new();
    let mut list = Json::Null;
    for (key, value) in entries {
        if key_matches(&key, "resourceList") {
            list = value;
        } else if close(&key, "resourceList") {
            notes.push(ignored_key("the configuration", &key, &["resourceList"]));
        }
        // Any other top-level key is another policy's (the config file is shared: an allocator
        // reads its own key next to `resourceList`), not a mistake to warn about on every load.
    }
    let items = match list {
        Json::Null => Vec::new(),
        Json::Array(items) => items,
        other => {
            return Err(SettingsProblem::new(
                "resourceList",
                format!("expected a list of resources, got {}", other.type_name()),
            ));
        }
    };
    let mut resources: Vec<Resource> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = format!("resourceList[{index}]");
        let resource = decode_resource(item, &path, default_prefix, &mut notes)?;
        if let Some(first) = resources
            .iter()
            .position(|r| r.resource_name == resource.resource_name)
        {
            return Err(SettingsProblem::new(
                format!("{path}.resourceName"),
                format!(
                    "resource {:?} is already defined by resourceList[{first}]; resource names (with their prefix) must be unique",
                    resource.resource_name
                ),
            ));
        }
        resources.push(resource);
    }
    Ok(Config { resources, notes })
}

/// The selector keys of each device type (upstream's `*Selectors` structs).
const NET_DEVICE_KEYS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "ddpProfiles",
    "pKeys",
    "isRdma",
    "needVhostNet",
    "vdpaType",
];
const ACCELERATOR_KEYS: &[&str] = &["vendors", "devices", "drivers", "pciAddresses"];
const AUX_NET_DEVICE_KEYS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "isRdma",
    "auxTypes",
];

/// The keys of a `resourceList` entry (upstream's `ResourceConfig`).
const RESOURCE_KEYS: &[&str] = &[
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "selectors",
    "additionalInfo",
];

/// What the decoder reads of `config.json`; Go only checks the syntax of the rest, so must we.
/// `selectors` stays raw until `deviceType` (possibly a later key) says which keys it has, as
/// upstream keeps it in a `json.RawMessage`.
const CONFIG_SHAPE: Shape = Shape::Object {
    read: &[],
    nested: &[(
        "resourceList",
        Shape::List(&Shape::Object {
            read: RESOURCE_KEYS,
            nested: &[("selectors", Shape::Raw)],
        }),
    )],
};

/// `selectors` of each device type: a selector object with the type's keys, or a list of them.
const NET_DEVICE_SELECTORS: Shape = Shape::List(&Shape::Object {
    read: NET_DEVICE_KEYS,
    nested: &[],
});
const ACCELERATOR_SELECTORS: Shape = Shape::List(&Shape::Object {
    read: ACCELERATOR_KEYS,
    nested: &[],
});
const AUX_NET_DEVICE_SELECTORS: Shape = Shape::List(&Shape::Object {
    read: AUX_NET_DEVICE_KEYS,
    nested: &[],
});

/// The selector key of any device type that `key` names (case-insensitively), if any.
fn selector_key(key: &str) -> Option<&'static str> {
    [NET_DEVICE_KEYS, ACCELERATOR_KEYS, AUX_NET_DEVICE_KEYS]
        .into_iter()
        .flatten()
        .find(|k| key_matches(key, k))
        .copied()
}

/// The note for an ignored `key` of the object at `path`, whose known keys are `known`.
fn ignored_key(path: &str, key: &str, known: &[&str]) -> String {
    let selector_level = [NET_DEVICE_KEYS, ACCELERATOR_KEYS, AUX_NET_DEVICE_KEYS].contains(&known);
    let why = if let Some(selector_key) = selector_key(key) {
        if selector_level {
            format!("{selector_key:?} is not a selector of this resource's deviceType")
        } else {
            format!("{selector_key:?} is a selector key; put it inside \"selectors\"")
        }
    } else {
        match known.iter().find(|k| close(key, k)) {
            Some(like) => format!("unknown key {key:?} (did you mean {like:?}?)"),
            None => format!("unknown key {key:?}"),
        }
    };
    format!("{path}: {why}: ignored, as the upstream plugin ignores it")
}

/// Whether `key` is one or two edits from `known`, ignoring case (a likely typo).
fn close(key: &str, known: &str) -> bool {
    let a: Vec<char> = key.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = known.chars().flat_map(char::to_lowercase).collect();
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()] <= 2
}

fn object<'a>(value: &'a Json, path: &str) -> Result<&'a [(String, Json)], SettingsProblem> {
    match value {
        Json::Object(entries) => Ok(entries),
        // Go decodes `null` into a struct as "no change": an all-default object.
        Json::Null => Ok(&[]),
        other => Err(SettingsProblem::new(
            path,
            format!(
                "expected an object, got {} ({})",
                other.type_name(),
                other.excerpt()
            ),
        )),
    }
}

fn string(value: &Json, path: &str, target: &mut String) -> Result<(), SettingsProblem> {
    match value {
        Json::String(s) => {
            target.clone_from(s);
            Ok(())
        }
        Json::Null => Ok(()),
        other => Err(SettingsProblem::new(
            path,
            format!(
                "expected a string, got {} ({}); write it in double quotes",
                other.type_name(),
                other.excerpt()
            ),
        )),
    }
}

fn boolean(value: &Json, path: &str, target: &mut bool) -> Result<(), SettingsProblem> {
    match value {
        Json::Bool(b) => {
            *target = *b;
            Ok(())
        }
        Json::Null => Ok(()),
        other => Err(SettingsProblem::new(
            path,
            format!(
                "expected true or false, got {} ({}); write it without quotes",
                other.type_name(),
                other.excerpt()
            ),
        )),
    }
}

fn string_list(value: &Json, path: &str) -> Result<Vec<String>, SettingsProblem> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::String(s) => Ok(s.clone()),
                // Go leaves the element at its zero value.
                Json::Null => Ok(String::new()),
                other => Err(SettingsProblem::new(
                    format!("{path}[{i}]"),
                    format!(
                        "expected a string, got {} ({})",
                        other.type_name(),
                        other.excerpt()
                    ),
                )),
            })
            .collect(),
        Json::String(s) => Err(SettingsProblem::new(
            path,
            format!("expected a list of strings, got the string {s:?}; write [{s:?}]"),
        )),
        other => Err(SettingsProblem::new(
            path,
            format!(
                "expected a list of strings, got {} ({})",
                other.type_name(),
                other.excerpt()
            ),
        )),
    }
}

/// Calls `set` for every entry whose key matches one of `fields` (Go's case-insensitive match), in
/// input order, so the last duplicate wins. Unknown keys are ignored, as upstream ignores them,
/// with a note in `notes`.
fn for_each_field<'a>(
    entries: &'a [(String, Json)],
    fields: &[&'static str],
    path: &str,
    notes: &mut Vec<String>,
    mut set: impl FnMut(&'static str, &'a Json) -> Result<(), SettingsProblem>,
) -> Result<(), SettingsProblem> {
    for (key, value) in entries {
        match fields.iter().find(|f| key_matches(key, f)) {
            Some(field) => set(field, value)?,
            None => notes.push(ignored_key(path, key, fields)),
        }
    }
    Ok(())
}

fn decode_resource(
    item: &Json,
    path: &str,
    default_prefix: &str,
    notes: &mut Vec<String>,
) -> Result<Resource, SettingsProblem> {
    let entries = object(item, path)?;
    let mut name = String::new();
    let mut prefix = String::new();
    let mut device_type = String::new();
    let mut exclude_topology = false;
    let mut selectors: Option<&Json> = None;
    let mut additional_info: Option<BTreeMap<String, BTreeMap<String, String>>> = None;
    for_each_field(entries, RESOURCE_KEYS, path, notes, |field, value| {
        let field_path = format!("{path}.{field}");
        match field {
            "resourceName" => string(value, &field_path, &mut name),
            "resourcePrefix" => string(value, &field_path, &mut prefix),
            "deviceType" => string(value, &field_path, &mut device_type),
            "excludeTopology" => boolean(value, &field_path, &mut exclude_topology),
            "selectors" => {
                selectors = Some(value);
                Ok(())
            }
            _ => decode_additional_info(value, &field_path, &mut additional_info),
        }
    })?;

    let device_type = match device_type.as_str() {
        "" | "netDevice" => DeviceType::NetDevice,
        "accelerator" => DeviceType::Accelerator,
        "auxNetDevice" => DeviceType::AuxNetDevice,
        other => {
            return Err(SettingsProblem::new(
                format!("{path}.deviceType"),
                format!(
                    "unsupported device type {other:?}; use \"netDevice\", \"accelerator\" or \"auxNetDevice\" (exact case)"
                ),
            ));
        }
    };
    validate_name(&name, &format!("{path}.resourceName"))?;
    let (prefix, prefix_path) = if prefix.is_empty() {
        (
            default_prefix.to_string(),
            "resourcePrefix (from --resource-prefix)".to_string(),
        )
    } else {
        (prefix, format!("{path}.resourcePrefix"))
    };
    validate_prefix(&prefix, &prefix_path)?;
    let resource_name = format!("{prefix}/{name}");

    let selectors_path = format!("{path}.selectors");
    let shape = match device_type {
        DeviceType::NetDevice => NET_DEVICE_SELECTORS,
        DeviceType::Accelerator => ACCELERATOR_SELECTORS,
        DeviceType::AuxNetDevice => AUX_NET_DEVICE_SELECTORS,
    };
    let raw = match selectors {
        Some(Json::Raw(text)) => Json::parse(text, shape).map_err(|e| {
            SettingsProblem::new(
                &selectors_path,
                format!("cannot be decoded: {e} (counted from the start of the selectors value)"),
            )
        })?,
        // Not kept raw (only if `CONFIG_SHAPE` changed): already decoded.
        Some(other) => other.clone(),
        None => Json::Null,
    };
    // A json.RawMessage pointer upstream: `null` resets it to nil.
    if raw == Json::Null {
        return Err(SettingsProblem::new(
            &selectors_path,
            "missing; every resource needs \"selectors\": an object such as {\"vendors\": [\"15b3\"]} or a list of them ({} matches every device of the type)",
        ));
    }
    let selectors = match &raw {
        Json::Object(_) => vec![decode_selector(
            &raw,
            &selectors_path,
            device_type,
            &resource_name,
            notes,
        )?],
        Json::Array(items) if items.is_empty() => {
            return Err(SettingsProblem::new(
                &selectors_path,
                "the list is empty, so nothing could ever be selected; give at least one selector object ({} matches every device of the type)",
            ));
        }
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{selectors_path}[{i}]");
                match item {
                    Json::Object(_) => {
                        decode_selector(item, &item_path, device_type, &resource_name, notes)
                    }
                    other => Err(SettingsProblem::new(
                        item_path,
                        format!(
                            "expected a selector object, got {} ({}); write {{}} to match every device of the type",
                            other.type_name(),
                            other.excerpt()
                        ),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(SettingsProblem::new(
                &selectors_path,
                format!(
                    "expected a selector object or a list of them, got {} ({})",
                    other.type_name(),
                    other.excerpt()
                ),
            ));
        }
    };
    Ok(Resource {
        resource_name,
        device_type,
        exclude_topology,
        selectors,
        additional_info,
    })
}

fn decode_additional_info(
    value: &Json,
    path: &str,
    target: &mut Option<BTreeMap<String, BTreeMap<String, String>>>,
) -> Result<(), SettingsProblem> {
    let entries = match value {
        Json::Null => {
            *target = None;
            return Ok(());
        }
        Json::Object(entries) => entries,
        other => {
            return Err(SettingsProblem::new(
                path,
                format!(
                    "expected an object such as {{\"*\": {{\"key\": \"value\"}}}}, got {} ({})",
                    other.type_name(),
                    other.excerpt()
                ),
            ));
        }
    };
    // Go reuses an existing map when a duplicate key decodes into it: entries merge.
    let map = target.get_or_insert_with(BTreeMap::new);
    for (key, inner) in entries {
        let inner_path = format!("{path}.{key:?}");
        let mut values = BTreeMap::new();
        match inner {
            Json::Null => {}
            Json::Object(pairs) => {
                for (k, v) in pairs {
                    let mut s = String::new();
                    string(v, &format!("{inner_path}.{k:?}"), &mut s)?;
                    values.insert(k.clone(), s);
                }
            }
            other => {
                return Err(SettingsProblem::new(
                    inner_path,
                    format!(
                        "expected an object of string values, got {} ({})",
                        other.type_name(),
                        other.excerpt()
                    ),
                ));
            }
        }
        map.insert(key.clone(), values);
    }
    Ok(())
}

fn decode_selector(
    value: &Json,
    path: &str,
    device_type: DeviceType,
    resource_name: &str,
    notes: &mut Vec<String>,
) -> Result<Selector, SettingsProblem> {
    let entries = object(value, path)?;
    let fields: &[&'static str] = match device_type {
        DeviceType::NetDevice => NET_DEVICE_KEYS,
        DeviceType::Accelerator => ACCELERATOR_KEYS,
        DeviceType::AuxNetDevice => AUX_NET_DEVICE_KEYS,
    };
    let mut selector = Selector::default();
    let mut vdpa_type = String::new();
    let mut pf_names = Vec::new();
    let mut root_devices = Vec::new();
    for_each_field(entries, fields, path, notes, |field, value| {
        let field_path = format!("{path}.{field}");
        match field {
            "vendors" => selector.vendors = string_list(value, &field_path)?,
            "devices" => selector.devices = string_list(value, &field_path)?,
            "drivers" => selector.drivers = string_list(value, &field_path)?,
            "pciAddresses" => selector.pci_addresses = string_list(value, &field_path)?,
            "acpiIndexes" => selector.acpi_indexes = string_list(value, &field_path)?,
            "pfNames" => pf_names = string_list(value, &field_path)?,
            "rootDevices" => root_devices = string_list(value, &field_path)?,
            "linkTypes" => selector.link_types = string_list(value, &field_path)?,
            "ddpProfiles" => selector.ddp_profiles = string_list(value, &field_path)?,
            "pKeys" => selector.pkeys = string_list(value, &field_path)?,
            "auxTypes" => selector.aux_types = string_list(value, &field_path)?,
            "isRdma" => boolean(value, &field_path, &mut selector.is_rdma)?,
            "needVhostNet" => boolean(value, &field_path, &mut selector.need_vhost_net)?,
            _ => string(value, &field_path, &mut vdpa_type)?,
        }
        Ok(())
    })?;
    selector.pf_names = parse_pf_selectors(&pf_names, &format!("{path}.pfNames"))?;
    selector.root_devices = parse_pf_selectors(&root_devices, &format!("{path}.rootDevices"))?;
    selector.vdpa_type = match vdpa_type.as_str() {
        "" => None,
        "vhost" => Some(VdpaType::Vhost),
        "virtio" => Some(VdpaType::Virtio),
        other => {
            return Err(SettingsProblem::new(
                format!("{path}.vdpaType"),
                format!("unsupported vDPA type {other:?}; use \"vhost\" or \"virtio\""),
            ));
        }
    };
    if selector.is_rdma && selector.vdpa_type.is_some() {
        return Err(SettingsProblem::new(
            path,
            "isRdma and vdpaType cannot be used in the same selector; put them in separate selectors",
        ));
    }
    if device_type == DeviceType::AuxNetDevice {
        if selector.aux_types.is_empty() {
            return Err(SettingsProblem::new(
                format!("{path}.auxTypes"),
                "auxNetDevice selectors need auxTypes; write \"auxTypes\": [\"sf\"]",
            ));
        }
        if let Some(bad) = selector.aux_types.iter().find(|t| t.as_str() != "sf") {
            return Err(SettingsProblem::new(
                format!("{path}.auxTypes"),
                format!("unsupported auxiliary device type {bad:?}; only \"sf\" is supported"),
            ));
        }
    }
    note_unmatchable(&selector, path, resource_name, notes);
    Ok(selector)
}

/// Notes every value of `selector` that can never match a device: upstream compares vendor and
/// device ids, PCI addresses and pkeys exactly with their sysfs text (and root devices' addresses
/// without regard to case), so `"15B3"` or `"3b:00.2"`
/// is accepted there and selects nothing, without a word. Only values no sysfs text can equal are
/// noted, with the form that would match.
fn note_unmatchable(selector: &Selector, path: &str, resource_name: &str, notes: &mut Vec<String>) {
    /// Why a value can never match, if it cannot.
    type Check = fn(&str) -> Option<String>;
    let lists: [(&str, &[String], Check); 4] = [
        ("vendors", &selector.vendors, |v| {
            unmatchable_id(v, "vendor", "15b3")
        }),
        ("devices", &selector.devices, |v| {
            unmatchable_id(v, "device", "1018")
        }),
        (
            "pciAddresses",
            &selector.pci_addresses,
            unmatchable_pci_address,
        ),
        ("pKeys", &selector.pkeys, unmatchable_pkey),
    ];
    for (key, values, check) in lists {
        for value in values {
            if let Some(why) = check(value) {
                notes.push(format!(
                    "{path}: {key} {value:?} of resource {resource_name:?} can never match: {why} (accepted, as upstream accepts it, but it selects nothing)"
                ));
            }
        }
    }
    // A rootDevices entry names its PF by PCI address, compared without regard to case (Go's
    // `EqualFold` upstream), so only the short form, stray spaces or no address at all never match.
    for root in &selector.root_devices {
        if let Some(why) = unmatchable_pci_address(&root.name.to_ascii_lowercase()) {
            notes.push(format!(
                "{path}: rootDevices PF {:?} of resource {resource_name:?} can never match: {why} (accepted, as upstream accepts it, but it selects nothing)",
                root.name
            ));
        }
    }
}

/// The end of a note: `write "<fixed>"` when the value is a recognisable variant, else an example.
fn write_or_example(fixed: Option<String>, valid: fn(&str) -> bool, example: &str) -> String {
    match fixed.filter(|f| valid(f)) {
        Some(fixed) => format!("; write {fixed:?}"),
        None => format!(", such as {example:?}"),
    }
}

fn lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `0x`/`0X` taken off, if present.
fn without_0x(text: &str) -> &str {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
}

/// Vendor and device ids: the host reads them from `modalias` as 4 lower-case hex digits (upstream
/// reads them the same way, through ghw).
fn unmatchable_id(value: &str, what: &str, example: &str) -> Option<String> {
    fn valid(id: &str) -> bool {
        id.len() == 4 && lower_hex(id)
    }
    if valid(value) {
        return None;
    }
    let fixed = Some(without_0x(value.trim()).to_ascii_lowercase());
    Some(format!(
        "sysfs {what} ids are 4 lower-case hex digits without \"0x\"{}",
        write_or_example(fixed, valid, example)
    ))
}

/// PCI addresses: sysfs names a function `%04x:%02x:%02x.%d` (domain, bus, device, function), so
/// a domain may have more than 4 digits (VMD domains do) but the rest has a fixed width.
fn unmatchable_pci_address(value: &str) -> Option<String> {
    fn valid(address: &str) -> bool {
        let mut parts = address.split(':');
        let (Some(domain), Some(bus), Some(slot), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some((device, function)) = slot.split_once('.') else {
            return false;
        };
        domain.len() >= 4
            && lower_hex(domain)
            && bus.len() == 2
            && lower_hex(bus)
            && device.len() == 2
            && lower_hex(device)
            // Three bits of function number: one digit 0-7 (ARI numbers go into the device part).
            && function.len() == 1
            && function.bytes().all(|b| (b'0'..=b'7').contains(&b))
    }
    if valid(value) {
        return None;
    }
    let lower = value.trim().to_ascii_lowercase();
    // `3b:00.2` (what `lspci` shows) lacks the domain.
    let fixed = if lower.matches(':').count() == 1 {
        format!("0000:{lower}")
    } else {
        lower
    };
    Some(format!(
        "sysfs PCI addresses are in the long lower-case form{}",
        write_or_example(Some(fixed), valid, "0000:3b:00.2")
    ))
}

/// pkeys: the kernel writes `ports/1/pkeys/0` as `0x%04x`.
fn unmatchable_pkey(value: &str) -> Option<String> {
    fn valid(pkey: &str) -> bool {
        pkey.len() == 6 && pkey.strip_prefix("0x").is_some_and(lower_hex)
    }
    if valid(value) {
        return None;
    }
    // A number written another way (`0x1`, `7fff`, `0xABCD`) is the pkey with that value.
    let digits = without_0x(value.trim());
    let fixed = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u16::from_str_radix(digits, 16).ok())
        .flatten()
        .map(|pkey| format!("0x{pkey:04x}"));
    Some(format!(
        "the kernel writes pkeys as \"0x\" and 4 lower-case hex digits{}",
        write_or_example(fixed, valid, "0xffff")
    ))
}

fn parse_pf_selectors(entries: &[String], path: &str) -> Result<Vec<PfSelector>, SettingsProblem> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            PfSelector::parse(entry)
                .map_err(|message| SettingsProblem::new(format!("{path}[{i}]"), message))
        })
        .collect()
}

/// Upstream's `^[a-zA-Z0-9_-]+$`, tightened to what kubelet accepts as the name part of an
/// extended resource (alphanumeric at both ends, at most 63 characters).
fn validate_name(name: &str, path: &str) -> Result<(), SettingsProblem> {
    if name.is_empty() {
        return Err(SettingsProblem::new(
            path,
            "missing; every resource needs a name such as \"mlnx_sriov\"",
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(SettingsProblem::new(
            path,
            format!(
                "{name:?} contains {bad:?}; a resource name may only contain letters, digits, '_' and '-'"
            ),
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) || name.len() > 63 {
        return Err(SettingsProblem::new(
            path,
            format!(
                "{name:?} is not a valid Kubernetes resource name: it must start and end with a letter or digit and have at most 63 characters"
            ),
        ));
    }
    Ok(())
}

/// The prefix must be a DNS subdomain (lower case) that kubelet accepts for an extended resource,
/// or the resource is refused. These are the host's checks of a pool name too; made here, the
/// error names the field instead of refusing the selection as a whole.
fn validate_prefix(prefix: &str, path: &str) -> Result<(), SettingsProblem> {
    // kubelet's `IsDNS1123Subdomain` checks each label's characters but not its length.
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    // kubelet checks `requests.<prefix>/<name>` as a qualified name too: 9 more characters must
    // fit in its 253.
    if prefix.is_empty() || prefix.len() > 244 || !prefix.split('.').all(label_ok) {
        return Err(SettingsProblem::new(
            path,
            format!(
                "{prefix:?} is not a valid resource prefix: use a lower-case DNS name of at most 244 characters, such as \"intel.com\""
            ),
        ));
    }
    // kubelet's `IsExtendedResourceName`: names under `kubernetes.io/` are native resources, and
    // `requests.` is the quota syntax.
    if prefix.ends_with("kubernetes.io") || prefix.starts_with("requests.") {
        return Err(SettingsProblem::new(
            path,
            format!(
                "{prefix:?} cannot be a resource prefix: kubelet reserves prefixes ending in \"kubernetes.io\" and refuses ones starting with \"requests.\"; use your own domain, such as \"intel.com\""
            ),
        ));
    }
    Ok(())
}
