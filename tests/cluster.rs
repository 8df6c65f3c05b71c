//! Redis Cluster (CONTRACT §11): three masters and three replicas with the module on all six,
//! on Redis 7.0, Redis 8.2 and Valkey 8.1. Producers and readers go through redis-py's
//! `RedisCluster` (tests/cluster_client.py); per-node checks use plain connections.

mod common;
use common::cluster::*;
use common::*;

/// The three tagged streams, one per master of a fresh cluster.
fn streams() -> Vec<String> {
    tags_on_three_masters()
        .iter()
        .map(|t| tagged_stream(t))
        .collect()
}

#[test]
fn cluster_comes_up_with_the_module_and_no_key() {
    for_each_flavor(|flavor| {
        let streams = streams();
        // redis-cli --cluster create refuses a node that holds a key: the module created none.
        let cluster = ClusterOptions::new(flavor, &streams).start();
        let topo = cluster.topology();
        let masters: Vec<&NodeInfo> = topo.iter().filter(|i| i.is_live_master()).collect();
        assert_eq!(masters.len(), 3, "{topo:?}");
        assert_eq!(topo.len(), 6, "{topo:?}");
        for m in &masters {
            assert_eq!(
                cluster.replicas_of(cluster.index(m.port)).len(),
                1,
                "{topo:?}"
            );
        }
        let owners: std::collections::BTreeSet<usize> =
            streams.iter().map(|s| cluster.owner(s)).collect();
        assert_eq!(owners.len(), 3, "the streams land on three masters");
        for n in cluster.live() {
            assert_eq!(n.dbsize(), 0);
        }
    });
}
