//! Compiles `proto/naxos.proto` with protox (no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/naxos.proto");
    let fds = protox::compile(["proto/naxos.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .type_attribute(".naxos.v1.Layout", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Segment", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Stripe", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Layout votes are rare; boxing their layouts keeps every request small.
        .boxed(".naxos.v1.LayoutPrepare.base")
        .boxed(".naxos.v1.LayoutAccept.layout")
        .boxed(".naxos.v1.LayoutAccept.base")
        // Layouts stored before segments had a kind are chains (kind 0).
        .field_attribute(".naxos.v1.Segment.kind", "#[serde(default)]")
        .compile_fds(fds)?;
    Ok(())
}
