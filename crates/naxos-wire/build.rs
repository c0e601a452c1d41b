//! Compiles `proto/naxos.proto` with protox (no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/naxos.proto");
    let fds = protox::compile(["proto/naxos.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .type_attribute(".naxos.v1.Layout", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Segment", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Stripe", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Away", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".naxos.v1.Change", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Layout votes are rare; boxing their layouts keeps every request small.
        .boxed(".naxos.v1.LayoutPrepare.base")
        .boxed(".naxos.v1.LayoutAccept.layout")
        .boxed(".naxos.v1.LayoutAccept.base")
        .boxed(".naxos.v1.CommitLayout.layout")
        .boxed(".naxos.v1.Bootstrap.layout")
        // Layouts stored before segments had a kind are chains (kind 0).
        .field_attribute(".naxos.v1.Segment.kind", "#[serde(default)]")
        // Layouts stored before self-healing lack its fields.
        .field_attribute(".naxos.v1.Layout.min_replicas", "#[serde(default)]")
        .field_attribute(".naxos.v1.Layout.replication", "#[serde(default)]")
        .field_attribute(".naxos.v1.Layout.away", "#[serde(default)]")
        .field_attribute(".naxos.v1.Layout.history", "#[serde(default)]")
        .field_attribute(".naxos.v1.Layout.tail_floor", "#[serde(default)]")
        .compile_fds(fds)?;
    Ok(())
}
