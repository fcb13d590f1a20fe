// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Trellis",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TrellisClient", targets: ["TrellisClient"]),
        .library(name: "TrellisFlow", targets: ["TrellisFlow"]),
        .executable(name: "trellis", targets: ["trellis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // libcrypt (libxcrypt, in every Debian): bcrypt and crypt(3) for --htpasswd; zlib
        // (zlib1g-dev): the cluster's object records, deflated.
        .target(name: "CTrellisShim", linkerSettings: [.linkedLibrary("crypt"), .linkedLibrary("z")]),
        .target(name: "TrellisSystem", dependencies: ["CTrellisShim"], swiftSettings: strict),
        .target(name: "TrellisProtocol", swiftSettings: strict),
        .target(
            name: "TrellisStore",
            dependencies: ["TrellisProtocol", "TrellisSystem"],
            swiftSettings: strict),
        .target(
            name: "TrellisMeta",
            dependencies: [
                "TrellisProtocol", "TrellisSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),
        // The Prometheus exporter: a swift-metrics backend and `GET /metrics` over Hummingbird,
        // run as a ServiceLifecycle service by `trellis serve` and `trellis flow run`.
        .target(
            name: "TrellisMetrics",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(
            name: "TrellisServer",
            dependencies: [
                "CTrellisShim", "TrellisProtocol", "TrellisStore", "TrellisSystem", "TrellisMeta", "TrellisClient",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(
            name: "TrellisClient",
            dependencies: ["TrellisProtocol", "TrellisSystem"],
            swiftSettings: strict),
        .target(
            name: "TrellisFlow",
            dependencies: [
                "TrellisClient", "TrellisSystem", "TrellisMeta",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            // The Python the runner writes out (zygote, stub, step bootstrap, data-plane
            // helper) lives as .py files, compiled into the binary.
            resources: [
                .embedInCode("Python/trellis_zygote.py"), .embedInCode("Python/trellis_stub.py"),
                .embedInCode("Python/trellis_step.py"), .embedInCode("Python/vineyard_data_plane.py"),
            ],
            swiftSettings: strict),
        // The read-only web view of runtimes and runs (`trellis dashboard`): pages and routes as
        // pure functions over TrellisFlow's records, served by Hummingbird.
        .target(
            name: "TrellisDashboard",
            dependencies: [
                "TrellisFlow", "TrellisClient", "TrellisProtocol", "TrellisSystem",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "trellis",
            dependencies: [
                "TrellisServer", "TrellisClient", "TrellisFlow", "TrellisMeta", "TrellisStore", "TrellisSystem",
                "TrellisMetrics", "TrellisDashboard",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(name: "TrellisTestSupport", dependencies: ["TrellisProtocol", "TrellisSystem"], swiftSettings: strict),
        .testTarget(
            name: "TrellisProtocolTests", dependencies: ["TrellisProtocol", "TrellisTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "TrellisStoreTests", dependencies: ["TrellisStore", "TrellisSystem", "TrellisTestSupport"],
            swiftSettings: strict),
        .testTarget(name: "TrellisMetaTests", dependencies: ["TrellisMeta", "TrellisProtocol", "TrellisSystem", "TrellisTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "TrellisMetricsTests",
            dependencies: [
                "TrellisMetrics", "TrellisServer", "TrellisFlow",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        .testTarget(name: "TrellisFlowTests", dependencies: ["TrellisFlow", "TrellisTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "TrellisDashboardTests",
            dependencies: [
                "TrellisDashboard", "TrellisFlow", "TrellisClient", "TrellisProtocol", "TrellisSystem",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),
        .testTarget(name: "TrellisClientTests", dependencies: ["TrellisClient", "TrellisTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "TrellisServerTests",
            dependencies: [
                "TrellisServer", "TrellisStore", "TrellisSystem", "TrellisProtocol", "TrellisClient", "TrellisMeta",
                "TrellisTestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
    ]
)

// libFuzzer harnesses (Fuzz/), only when scripts/fuzz.sh asks for them (TRELLIS_FUZZ=1, with
// its own --scratch-path .build-fuzz and -sanitize=fuzzer -D TRELLIS_FUZZING), so ordinary
// builds neither compile them nor need the fuzzer runtime. Built without the fuzzer they
// are crash reproducers: `FuzzJSON FILE…` replays inputs.
if Context.environment["TRELLIS_FUZZ"] == "1" {
    let fuzzed: [(String, [Target.Dependency])] = [
        ("FuzzJSON", ["TrellisProtocol"]),
        ("FuzzFrame", ["TrellisProtocol", "TrellisServer", "TrellisSystem"]),
        ("FuzzRequest", ["TrellisProtocol", "TrellisStore", "TrellisServer"]),
        ("FuzzWatch", ["TrellisMeta"]),
    ]
    package.targets.append(.target(name: "CFuzzDriver", path: "Fuzz/CFuzzDriver"))
    for (name, dependencies) in fuzzed {
        package.targets.append(
            .executableTarget(
                name: name, dependencies: dependencies + ["CFuzzDriver"], path: "Fuzz/\(name)", swiftSettings: strict))
    }
}
