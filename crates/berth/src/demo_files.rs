//! The multi-product example, embedded so `berth demo` needs nothing but the binary and git.

pub const EXAMPLE: &[(&str, &str)] = &[
    (
        ".gitignore",
        include_str!("../../../examples/multi-product/.gitignore"),
    ),
    (
        "README.md",
        include_str!("../../../examples/multi-product/README.md"),
    ),
    (
        "apps/frontend/package.json",
        include_str!("../../../examples/multi-product/apps/frontend/package.json"),
    ),
    (
        "apps/frontend/src/routes/+page.svelte",
        include_str!("../../../examples/multi-product/apps/frontend/src/routes/+page.svelte"),
    ),
    (
        "apps/server/app/main.py",
        include_str!("../../../examples/multi-product/apps/server/app/main.py"),
    ),
    (
        "apps/server/requirements.txt",
        include_str!("../../../examples/multi-product/apps/server/requirements.txt"),
    ),
    (
        "berth.toml",
        include_str!("../../../examples/multi-product/berth.toml"),
    ),
    (
        "docker/frontend.Dockerfile",
        include_str!("../../../examples/multi-product/docker/frontend.Dockerfile"),
    ),
    (
        "docker/server.Dockerfile",
        include_str!("../../../examples/multi-product/docker/server.Dockerfile"),
    ),
    (
        "products/bestays/settings.yaml",
        include_str!("../../../examples/multi-product/products/bestays/settings.yaml"),
    ),
    (
        "products/realestate/settings.yaml",
        include_str!("../../../examples/multi-product/products/realestate/settings.yaml"),
    ),
];

/// The demo's product server, compiled statically for `FROM scratch` images on `--runtime compose`.
pub const DEMO_APP_SOURCE: &str = include_str!("../../../examples/demo-app/src/main.rs");
