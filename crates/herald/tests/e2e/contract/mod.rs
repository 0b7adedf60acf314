//! The Driver contract suite (`herald_testkit::contract`) run against every destination type's
//! real server: one module per type implementing `Case`, each running every scenario.
