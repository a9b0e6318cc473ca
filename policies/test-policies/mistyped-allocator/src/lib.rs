//! A component exporting `vfpool:policy/allocator@0.1.0` with types other than the contract's (as
//! a policy built against another version of the WIT would), for the host's refusal tests.
#![allow(unsafe_code)] // wit-bindgen's generated export shims
#![allow(missing_docs)] // wit-bindgen's generated items in a test-only crate

wit_bindgen::generate!({
    inline: "
        package vfpool:policy@0.1.0;
        interface allocator { prefer: func(size: u32) -> list<string>; }
        world mistyped { export allocator; }
    ",
    world: "mistyped",
});

struct Mistyped;

impl exports::vfpool::policy::allocator::Guest for Mistyped {
    fn prefer(_size: u32) -> Vec<String> {
        Vec::new()
    }
}

export!(Mistyped);
