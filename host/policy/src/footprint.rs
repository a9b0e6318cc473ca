//! What a module's sections say about the sandbox's limits, read before it is compiled: a core
//! module's host-side runtime state per instance (estimated), the initial memory it declares, and
//! whether it takes its arguments in one allocation.
//!
//! wasmtime keeps each core instance's runtime state (its `VMContext`) on the host heap, outside
//! the per-call memory cap. With the instance pool, wasmtime refuses a component whose instances
//! are too large; without it (the reservation was refused) nothing does, and a module of a million
//! globals instantiated many times would cost gigabytes per call, in host code the deadline cannot
//! interrupt. This estimate lets the host refuse such a module in both modes, naming it. It counts
//! the parts of the state that grow with the module; what does not (a few hundred bytes of fixed
//! fields) is left to the margin of the limit.

use wasmparser::{ElementItems, Encoding, ExternalKind, Parser, Payload};

use crate::lowering::ARENA_ARGUMENTS_SECTION;

/// A defined global (`VMGlobalDefinition`).
const GLOBAL_BYTES: usize = 16;
/// An import (a function import is the largest: callee, caller context, array-call pointer).
const IMPORT_BYTES: usize = 24;
/// A function reference (`VMFuncRef`) for a function that can escape: a table element or an
/// export.
const FUNC_REF_BYTES: usize = 32;

/// What a file's sections say about the sandbox's limits, read in one pass before it is compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Whether the file is a component (else a core module).
    pub component: bool,
    /// The core module whose instances need the most host-side state: its position among the
    /// file's core modules (0-based, in file order) and the estimated bytes.
    pub largest_instance: Option<(usize, usize)>,
    /// The core module that declares the most initial linear memory in one memory: its position
    /// and the bytes (pages of 64 KiB, or the custom page size a memory declares).
    pub largest_memory: Option<(usize, u64)>,
    /// Every core module that exports `cabi_realloc` declares that it never frees
    /// ([`crate::lowering::ARENA_ARGUMENTS_SECTION`], version 1), and there is one: the host may
    /// pass arguments in one allocation whichever module's `realloc` receives them.
    pub arena_arguments: bool,
}

/// Reads `bytes` (a component, or a core module) for its [`Footprint`]. `None` when the bytes do
/// not parse (compiling then reports why).
pub(crate) fn scan(bytes: &[u8]) -> Option<Footprint> {
    let mut footprint = Footprint::default();
    // One entry per module or component being read: the estimate so far for a core module,
    // `None` for a component.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut modules = 0;
    // The core module being read: (exports `cabi_realloc`, declares it never frees).
    let mut module_realloc = (false, false);
    // Core modules exporting `cabi_realloc`, and those of them that declare.
    let (mut reallocs, mut declared) = (0usize, 0usize);
    for payload in Parser::new(0).parse_all(bytes) {
        let grow = match payload.ok()? {
            Payload::Version { encoding, .. } => {
                if open.is_empty() {
                    footprint.component = matches!(encoding, Encoding::Component);
                }
                open.push(matches!(encoding, Encoding::Module).then_some(0));
                module_realloc = (false, false);
                0
            }
            Payload::GlobalSection(globals) => count(globals.count()).saturating_mul(GLOBAL_BYTES),
            Payload::ImportSection(imports) => {
                let mut n = 0usize;
                for import in imports.into_imports() {
                    import.ok()?;
                    n += 1;
                }
                n.saturating_mul(IMPORT_BYTES)
            }
            Payload::ElementSection(elements) => {
                let mut n = 0usize;
                for element in elements {
                    n = n.saturating_add(match element.ok()?.items {
                        ElementItems::Functions(items) => count(items.count()),
                        ElementItems::Expressions(_, items) => count(items.count()),
                    });
                }
                n.saturating_mul(FUNC_REF_BYTES)
            }
            Payload::ExportSection(exports) => {
                let n = count(exports.count());
                for export in exports {
                    let export = export.ok()?;
                    module_realloc.0 |=
                        export.name == REALLOC_EXPORT && matches!(export.kind, ExternalKind::Func);
                }
                n.saturating_mul(FUNC_REF_BYTES)
            }
            Payload::MemorySection(memories) if matches!(open.last(), Some(Some(_))) => {
                for memory in memories {
                    let memory = memory.ok()?;
                    let page = memory.page_size_log2.map_or(1u64 << 16, |log2| {
                        1u64.checked_shl(log2).unwrap_or(u64::MAX)
                    });
                    let initial = memory.initial.saturating_mul(page);
                    if footprint
                        .largest_memory
                        .is_none_or(|(_, most)| initial > most)
                    {
                        footprint.largest_memory = Some((modules, initial));
                    }
                }
                0
            }
            Payload::CustomSection(section)
                if matches!(open.last(), Some(Some(_)))
                    && section.name() == ARENA_ARGUMENTS_SECTION =>
            {
                module_realloc.1 |= section.data() == [1];
                0
            }
            Payload::End(_) => {
                if let Some(Some(estimate)) = open.pop() {
                    if module_realloc.0 {
                        reallocs += 1;
                        declared += usize::from(module_realloc.1);
                    }
                    if footprint
                        .largest_instance
                        .is_none_or(|(_, most)| estimate > most)
                    {
                        footprint.largest_instance = Some((modules, estimate));
                    }
                    modules += 1;
                }
                0
            }
            _ => 0,
        };
        if let Some(Some(estimate)) = open.last_mut() {
            *estimate = estimate.saturating_add(grow);
        }
    }
    footprint.arena_arguments = reallocs > 0 && declared == reallocs;
    Some(footprint)
}

/// The export through which the canonical ABI allocates in a module.
const REALLOC_EXPORT: &str = "cabi_realloc";

fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MAX_CORE_INSTANCE_STATE_BYTES;

    /// The shipped policies and the examples in other languages are far under the limit (their
    /// real per-instance sizes: Rust under 6 KB, JavaScript 202 KB, Python 242 KB), so the estimate
    /// refuses only what no real policy looks like. The examples are built by `make policies`.
    #[test]
    fn real_policies_are_far_under_the_limit() {
        let examples = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/examples/target"
        );
        let mut components: Vec<(String, Vec<u8>)> = [
            ("upstream-selector", crate::defaults::UPSTREAM_SELECTOR),
            ("packed-allocator", crate::defaults::PACKED_ALLOCATOR),
            ("spread-allocator", crate::defaults::SPREAD_ALLOCATOR),
        ]
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
        .collect();
        for name in ["python_selector.wasm", "js_allocator.wasm"] {
            let path = std::path::Path::new(examples).join(name);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run `make policies`)", path.display()));
            components.push((name.to_owned(), bytes));
        }
        for (name, bytes) in components {
            let (_, needs) = scan(&bytes)
                .and_then(|f| f.largest_instance)
                .expect("parses");
            assert!(
                needs * 2 < MAX_CORE_INSTANCE_STATE_BYTES,
                "{name}: {needs} bytes estimated"
            );
            eprintln!("{name}: {needs} bytes estimated");
        }
    }

    /// A component whose core module declares 256 MiB of initial memory, above the 128 MiB a
    /// call may use, was compiled in full (seconds of CPU and hundreds of MiB for a big module)
    /// before wasmtime refused it, and compiled again on every retry. It is refused before
    /// compiling now, naming the module and the sizes.
    #[test]
    fn a_component_declaring_more_initial_memory_than_a_call_may_use_is_refused_unbuilt() {
        // A core module with one memory of 4,096 pages (256 MiB).
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend_from_slice(&[5, 4, 1, 0, 0x80, 0x20]);
        let memory = |bytes: &[u8]| scan(bytes).and_then(|f| f.largest_memory);
        assert_eq!(memory(&module), Some((0, 256 << 20)));
        // The same in a component, after a core module without memory.
        let empty = b"\0asm\x01\0\0\0".to_vec();
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        for core in [&empty, &module] {
            component.push(1);
            component.push(u8::try_from(core.len()).unwrap());
            component.extend_from_slice(core);
        }
        assert_eq!(memory(&component), Some((1, 256 << 20)));
        assert!(scan(&component).unwrap().component && !scan(&module).unwrap().component);
        assert_eq!(scan(b"not wasm"), None);

        let engine = crate::engine::PolicyEngine::new(crate::engine::Limits::default()).unwrap();
        match crate::policy::Policy::compile(&engine, "big.wasm", &component) {
            Err(e @ crate::policy::LoadError::InitialMemory { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("core module #1") && text.contains("268435456"),
                    "{text}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// The one-allocation declaration counts in a core module that exports `cabi_realloc`,
    /// version 1 only, and only if every module exporting `cabi_realloc` makes it (a component
    /// may hold modules whose allocators differ); the shipped policies (built with `bump-alloc`)
    /// make it, and the examples in other languages, whose allocators free, do not.
    #[test]
    fn the_arena_declaration_is_read_from_core_modules_only() {
        let custom = |data: &[u8]| {
            let name = ARENA_ARGUMENTS_SECTION.as_bytes();
            let mut section = vec![0, u8::try_from(1 + name.len() + data.len()).unwrap()];
            section.push(u8::try_from(name.len()).unwrap());
            section.extend_from_slice(name);
            section.extend_from_slice(data);
            section
        };
        // An export section: function 0 exported as `cabi_realloc`.
        let realloc_export = {
            let name = REALLOC_EXPORT.as_bytes();
            let mut section = vec![7, u8::try_from(4 + name.len()).unwrap(), 1];
            section.push(u8::try_from(name.len()).unwrap());
            section.extend_from_slice(name);
            section.extend_from_slice(&[0, 0]);
            section
        };
        let declares = |bytes: &[u8]| scan(bytes).unwrap().arena_arguments;
        let module = |realloc: bool, data: Option<&[u8]>| {
            let mut module = b"\0asm\x01\0\0\0".to_vec();
            if realloc {
                module.extend_from_slice(&realloc_export);
            }
            if let Some(data) = data {
                module.extend_from_slice(&custom(data));
            }
            module
        };
        assert!(declares(&module(true, Some(&[1]))));
        assert!(
            !declares(&module(true, Some(&[2]))),
            "a version this host does not know"
        );
        assert!(!declares(&module(true, Some(&[]))));
        assert!(!declares(&module(true, None)));
        assert!(
            !declares(&module(false, Some(&[1]))),
            "no allocator for the declaration to speak for"
        );
        let component = |cores: &[Vec<u8>], outer: &[u8]| {
            let mut component = b"\0asm\x0d\0\x01\0".to_vec();
            component.extend_from_slice(outer);
            for core in cores {
                component.push(1);
                component.push(u8::try_from(core.len()).unwrap());
                component.extend_from_slice(core);
            }
            component
        };
        assert!(declares(&component(&[module(true, Some(&[1]))], &[])));
        assert!(
            !declares(&component(&[module(true, None)], &custom(&[1]))),
            "on the component, not on the module whose allocator it speaks for"
        );
        assert!(
            declares(&component(
                &[module(false, None), module(true, Some(&[1]))],
                &[]
            )),
            "a module without an allocator has nothing to declare"
        );
        assert!(
            !declares(&component(
                &[module(true, Some(&[1])), module(true, None)],
                &[]
            )),
            "one module's allocator frees"
        );

        for (name, bytes) in [
            ("upstream-selector", crate::defaults::UPSTREAM_SELECTOR),
            ("packed-allocator", crate::defaults::PACKED_ALLOCATOR),
            ("spread-allocator", crate::defaults::SPREAD_ALLOCATOR),
        ] {
            assert!(declares(bytes), "{name}");
        }
        let examples = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/examples/target"
        );
        for name in ["python_selector.wasm", "js_allocator.wasm"] {
            let path = std::path::Path::new(examples).join(name);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run `make policies`)", path.display()));
            assert!(!declares(&bytes), "{name}");
        }
    }

    /// Globals, imports, table elements and exports all count, per core module, nested ones
    /// included; bytes that do not parse give no estimate.
    #[test]
    fn the_estimate_grows_with_what_a_module_declares() {
        let instance = |bytes: &[u8]| scan(bytes).and_then(|f| f.largest_instance);
        assert_eq!(instance(b"not wasm"), None);
        assert_eq!(instance(b"\0asm\x01\0\0\0"), Some((0, 0)));
        // One global, one function import, one exported function in a one-element table.
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        // type section: one type () -> ()
        module.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        // import section: "m" "f" func type 0
        module.extend_from_slice(&[2, 7, 1, 1, b'm', 1, b'f', 0, 0]);
        // function section: one function of type 0
        module.extend_from_slice(&[3, 2, 1, 0]);
        // table section: one funcref table, min 1
        module.extend_from_slice(&[4, 4, 1, 0x70, 0, 1]);
        // global section: one immutable i32 = 0
        module.extend_from_slice(&[6, 6, 1, 0x7f, 0, 0x41, 0, 0x0b]);
        // export section: "g" func 1
        module.extend_from_slice(&[7, 5, 1, 1, b'g', 0, 1]);
        // element section: active, table 0, offset i32.const 0, one function index 1
        module.extend_from_slice(&[9, 7, 1, 0, 0x41, 0, 0x0b, 1, 1]);
        // code section: one empty body
        module.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]);
        let one_each = GLOBAL_BYTES + IMPORT_BYTES + 2 * FUNC_REF_BYTES;
        assert_eq!(instance(&module), Some((0, one_each)));
    }
}
