"""Independent clients for the destination tests: set up resources on, and read messages back
from, the real servers with each service's own client library (boto3, kafka-python,
google-cloud-pubsub). Herald's drivers share no code with these.

Usage: reader.py COMMAND JSON-ARGS. Prints one JSON document on stdout; exits non-zero with the
error on stderr when anything fails.
"""

import base64
import json
import sys
import time


def boto(service, a):
    import boto3

    return boto3.client(
        service,
        endpoint_url=a["endpoint"],
        region_name=a.get("region", "us-east-1"),
        aws_access_key_id=a.get("key", "testing"),
        aws_secret_access_key=a.get("secret", "testing"),
    )


def aws_setup(a):
    """Creates an IAM user with an access key, the queue, bucket and stream; then (unless
    "auth" is false) turns on moto's request authentication so every later request must be
    signed with that key."""
    import urllib.request

    iam = boto("iam", a)
    iam.create_user(UserName="herald")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="herald", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="herald")["AccessKey"]
    out = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    out["queue_url"] = boto("sqs", a).create_queue(QueueName=a["queue"])["QueueUrl"]
    boto("s3", a).create_bucket(Bucket=a["bucket"])
    kinesis = boto("kinesis", a)
    kinesis.create_stream(StreamName=a["stream"], ShardCount=1)
    for _ in range(50):
        desc = kinesis.describe_stream(StreamName=a["stream"])["StreamDescription"]
        if desc["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    if not a.get("auth", True):
        return out
    req = urllib.request.Request(
        a["endpoint"] + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()
    return out


def sqs_read(a):
    sqs = boto("sqs", a)
    got = []
    deadline = time.time() + a.get("wait", 20)
    while len(got) < a["count"] and time.time() < deadline:
        r = sqs.receive_message(
            QueueUrl=a["queue_url"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        for m in r.get("Messages", []):
            attrs = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
            got.append({"body": m["Body"], "attributes": attrs})
            sqs.delete_message(QueueUrl=a["queue_url"], ReceiptHandle=m["ReceiptHandle"])
    return got


def s3_read(a):
    s3 = boto("s3", a)
    out = []
    for obj in s3.list_objects_v2(Bucket=a["bucket"]).get("Contents", []):
        o = s3.get_object(Bucket=a["bucket"], Key=obj["Key"])
        out.append(
            {
                "key": obj["Key"],
                "body": o["Body"].read().decode(),
                "metadata": o.get("Metadata", {}),
                "content_type": o.get("ContentType"),
                "storage_class": s3.head_object(Bucket=a["bucket"], Key=obj["Key"]).get(
                    "StorageClass", "STANDARD"
                ),
            }
        )
    return out


def kinesis_read(a):
    k = boto("kinesis", a)
    shard = k.list_shards(StreamName=a["stream"])["Shards"][0]["ShardId"]
    it = k.get_shard_iterator(
        StreamName=a["stream"], ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out = []
    for _ in range(20):
        r = k.get_records(ShardIterator=it, Limit=100)
        for rec in r["Records"]:
            out.append({"data": rec["Data"].decode(), "partition_key": rec["PartitionKey"]})
        it = r["NextShardIterator"]
        if not r["Records"]:
            break
    return out


def kafka_read(a):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=a["bootstrap"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    tp = TopicPartition(a["topic"], 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = []
    deadline = time.time() + a.get("wait", 20)
    while len(out) < a["count"] and time.time() < deadline:
        for rec in c.poll(timeout_ms=500).get(tp, []):
            out.append(
                {
                    "key": rec.key.decode() if rec.key is not None else None,
                    "value": rec.value.decode(),
                    "headers": [[k, v.decode()] for k, v in rec.headers],
                }
            )
    c.close()
    return out


def kafka_create_topic(a):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=a["bootstrap"])
    admin.create_topics([NewTopic(name=a["topic"], num_partitions=1, replication_factor=1)])
    admin.close()
    return {"created": a["topic"]}


def pubsub_setup(a):
    from google.cloud import pubsub_v1

    pub = pubsub_v1.PublisherClient()
    sub = pubsub_v1.SubscriberClient()
    topic = pub.topic_path(a["project"], a["topic"])
    pub.create_topic(name=topic)
    path = sub.subscription_path(a["project"], a["subscription"])
    sub.create_subscription(name=path, topic=topic)
    return {"topic": topic, "subscription": path}


def pubsub_read(a):
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    path = sub.subscription_path(a["project"], a["subscription"])
    out = []
    deadline = time.time() + a.get("wait", 20)
    while len(out) < a["count"] and time.time() < deadline:
        r = sub.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
        ids = []
        for m in r.received_messages:
            out.append(
                {
                    "data": base64.b64encode(m.message.data).decode(),
                    "attributes": dict(m.message.attributes),
                }
            )
            ids.append(m.ack_id)
        if ids:
            sub.acknowledge(request={"subscription": path, "ack_ids": ids})
    return out


COMMANDS = {
    "aws-setup": aws_setup,
    "sqs-read": sqs_read,
    "s3-read": s3_read,
    "kinesis-read": kinesis_read,
    "kafka-read": kafka_read,
    "kafka-create-topic": kafka_create_topic,
    "pubsub-setup": pubsub_setup,
    "pubsub-read": pubsub_read,
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))))
