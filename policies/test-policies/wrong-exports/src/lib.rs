//! A valid component with the wrong exports (a greeter), for the host's refusal tests.
#![allow(unsafe_code)] // wit-bindgen's generated export shims
#![allow(missing_docs)] // wit-bindgen's generated items in a test-only crate

wit_bindgen::generate!({
    inline: "
        package test:other@0.1.0;
        interface greeter { greet: func() -> string; }
        world other { export greeter; }
    ",
    world: "other",
});

struct Greeter;

impl exports::test::other::greeter::Guest for Greeter {
    fn greet() -> String {
        "hello".to_string()
    }
}

export!(Greeter);
