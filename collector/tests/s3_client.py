"""An independent S3 client for collector/tests/archive_s3.rs (boto3, which
moto[server] installs): makes the bucket, lists objects, fetches them.

    s3_client.py ENDPOINT CA_FILE mkbucket BUCKET
    s3_client.py ENDPOINT CA_FILE list BUCKET PREFIX      -> JSON [{"key", "size"}]
    s3_client.py ENDPOINT CA_FILE dump BUCKET PREFIX OUTDIR -> JSON [{"key", "size", "file"}]
"""
import json
import os
import sys

import boto3

endpoint, ca, cmd, bucket = sys.argv[1:5]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, region_name="us-east-1")
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "list":
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[5]):
        out += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
    print(json.dumps(out))
elif cmd == "dump":
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[5]):
        for o in page.get("Contents", []):
            path = os.path.join(sys.argv[6], f"{len(out):06}")
            with open(path, "wb") as f:
                f.write(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            out.append({"key": o["Key"], "size": o["Size"], "file": path})
    print(json.dumps(out))
else:
    sys.exit(f"unknown command {cmd}")
