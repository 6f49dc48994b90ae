//! The cluster and Sentinel starters do what they promise: the right shape, a SIGKILLed master
//! replaced by a replica, and the handles' answers agreeing with the servers'.

use ratatoskr_testkit::{RedisCluster, RedisSentinel, key_slot};

#[test]
fn a_cluster_starts_with_three_masters_and_fails_over_a_killed_one() {
    let mut cluster = RedisCluster::start();
    assert_eq!(cluster.len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert_eq!(cluster.replicas().len(), 3);
    let key = b"rt:{u:42}";
    let victim = cluster.master_of_key(key);
    assert!(masters.contains(&victim));
    // The handle's slot arithmetic agrees with the server's.
    let said = cluster
        .cli(victim, &["CLUSTER", "KEYSLOT", "rt:{u:42}"])
        .expect("the node answers");
    assert_eq!(said.trim(), key_slot(key).to_string());
    cluster.kill(victim);
    let promoted = cluster.wait_failover(victim);
    assert_ne!(promoted, victim);
    assert_eq!(cluster.master_of_key(key), promoted);
    assert_eq!(cluster.masters().len(), 3);
    // The killed node comes back empty and rejoins as a replica.
    cluster.restart(victim);
    cluster.wait_healthy();
    assert!(cluster.replicas().contains(&victim));
}

#[test]
fn a_sentinel_group_promotes_a_replica_when_the_master_is_killed() {
    let mut group = RedisSentinel::start();
    assert_eq!(group.master(), 0);
    assert_eq!(group.sentinel_addrs().len(), 3);
    assert!(group.url().starts_with("redis+sentinel://127.0.0.1:"));
    assert!(group.url().ends_with("/ratatoskr"));
    group.kill(0);
    let new = group.wait_failover(0);
    assert_ne!(new, 0);
    group.restart(0);
    group.wait_healthy();
    assert_eq!(group.master(), new, "the old master returns as a replica");
}
