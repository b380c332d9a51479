#!/usr/bin/env python3
"""Seeds an AWS emulator (moto) with the demo's KMS keys: two accounts, two regions each.

    demo_seed.py [--endpoint URL]

The endpoint comes from --endpoint, else DEMO_ENDPOINT, else AWS_ENDPOINT_URL, else
http://127.0.0.1:5055. The same script seeds the local demo (scripts/demo) and the compose
`seed` service (http://moto:5000).

Idempotent: a key whose alias already exists in its account and region is left alone, so a
second run against the same server adds nothing. moto forgets everything when it restarts.

Each key exercises one thing Keyward reports: IAM delegation (the AWS default policy), a fixed
policy, a public key, sharing with another account, a key pending deletion, rotation on and off,
a grant, and an asymmetric signing key. Each account also gets IAM identities whose policies reach
the delegating keys (the dashboard's Access tab and the fix's impact show them): an application
role that decrypts with every key (IAM-KMS-DECRYPT-ALL-KEYS), a group of auditors that reads key
metadata, and the KMSAdmin role the fix names as administrator.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

import boto3
from botocore.config import Config

ACCOUNTS = {"111111111111": "prod", "222222222222": "staging"}
REGIONS = ["us-east-1", "eu-west-1"]
# An account outside the organisation: a partner that some keys are shared with.
PARTNER = "444455556666"
# Keyward's reading role; moto lets anyone assume it and then acts in its account.
AUDIT_ROLE = "KeywardAudit"

ADMIN_ACTIONS = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
]
USE_ACTIONS = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
]
SIGN_ACTIONS = ["kms:Sign", "kms:Verify", "kms:GetPublicKey", "kms:DescribeKey"]
AUDIT_ACTIONS = [
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
]


def role(account, name):
    return f"arn:aws:iam::{account}:role/{name}"


def statement(sid, principal, actions, condition=None):
    s = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal if principal == "*" else {"AWS": principal},
        "Action": actions,
        "Resource": "*",
    }
    if condition:
        s["Condition"] = condition
    return s


def console_default_policy(account, user):
    """What the KMS console writes: the account root may do everything (IAM delegation)."""
    return {
        "Version": "2012-10-17",
        "Id": "key-consolepolicy-3",
        "Statement": [
            statement("Enable IAM User Permissions", f"arn:aws:iam::{account}:root", "kms:*"),
            statement("Allow access for Key Administrators", role(account, "KMSAdmin"), ADMIN_ACTIONS),
            statement("Allow use of the key", role(account, user), USE_ACTIONS),
            statement(
                "Allow attachment of persistent resources",
                role(account, user),
                ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
                {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            ),
        ],
    }


def fixed_policy(account, user, use_actions=USE_ACTIONS, extra=()):
    """The policy as AWS recommends it (and `keyward fix` writes it): root pinned, admins named."""
    return {
        "Version": "2012-10-17",
        "Id": "key-keyward-fixed",
        "Statement": [
            statement(
                "EnableRootAccessAndPreventPermissionDelegation",
                f"arn:aws:iam::{account}:root",
                "kms:*",
                {"StringEquals": {"aws:PrincipalType": "Account"}},
            ),
            statement("Allow access for Key Administrators", role(account, "KMSAdmin"), ADMIN_ACTIONS),
            statement("Allow Keyward to audit the key", role(account, AUDIT_ROLE), AUDIT_ACTIONS),
            statement("Allow use of the key", role(account, user), use_actions),
            *extra,
        ],
    }


def public_policy(account, user):
    return fixed_policy(
        account,
        user,
        extra=[statement("Allow anyone to decrypt downloads", "*", ["kms:Decrypt"])],
    )


def shared_policy(account, user):
    return fixed_policy(
        account,
        user,
        extra=[
            statement(
                "Allow the partner account to decrypt",
                role(PARTNER, "PartnerReader"),
                ["kms:Decrypt", "kms:DescribeKey"],
            )
        ],
    )


# (account, region, alias, description, policy or None for moto's AWS default, options)
# Options: rotation (bool), grant (grantee role name), pending_deletion, spec/usage, tags.
PROD, STAGING = "111111111111", "222222222222"
KEYS = [
    (PROD, "us-east-1", "alias/payments", "Card tokens (console default policy)",
     console_default_policy(PROD, "PaymentsApp"),
     {"rotation": False, "grant": "PaymentsApp", "tags": {"Team": "payments", "DataClass": "pci"}}),
    (PROD, "us-east-1", "alias/orders", "Order database (fixed policy)",
     fixed_policy(PROD, "OrdersApp"),
     {"rotation": True, "tags": {"Team": "orders", "DataClass": "confidential"}}),
    (PROD, "us-east-1", "alias/public-downloads", "Downloads bucket (public decrypt)",
     public_policy(PROD, "DownloadsApp"),
     {"rotation": True, "tags": {"Team": "web"}}),
    (PROD, "us-east-1", "alias/analytics-share", "Analytics export shared with a partner",
     shared_policy(PROD, "AnalyticsApp"),
     {"rotation": True, "tags": {"Team": "data"}}),
    (PROD, "eu-west-1", "alias/backups-eu", "EU backups (fixed policy, EBS grant)",
     fixed_policy(PROD, "BackupApp"),
     {"rotation": True, "grant": "BackupApp", "tags": {"Team": "platform"}}),
    (PROD, "eu-west-1", "alias/legacy-reports", "Old reporting key, being retired",
     None,
     {"pending_deletion": True, "tags": {"Team": "data"}}),
    (PROD, "eu-west-1", "alias/release-signing", "Release signing (RSA 2048)",
     fixed_policy(PROD, "ReleaseBot", use_actions=SIGN_ACTIONS),
     {"spec": "RSA_2048", "usage": "SIGN_VERIFY", "tags": {"Team": "platform"}}),
    (STAGING, "us-east-1", "alias/staging-app", "Staging app (AWS default policy)",
     None,
     {"rotation": False, "tags": {"Team": "platform"}}),
    (STAGING, "us-east-1", "alias/staging-ci", "CI artefacts (fixed policy)",
     fixed_policy(STAGING, "CiRunner"),
     {"rotation": True, "grant": "CiRunner", "tags": {"Team": "platform"}}),
    (STAGING, "eu-west-1", "alias/staging-partner-share", "Partner test data (trusted partner)",
     shared_policy(STAGING, "PartnerSync"),
     {"rotation": True, "tags": {"Team": "data"}}),
    (STAGING, "eu-west-1", "alias/staging-old", "Abandoned experiment",
     console_default_policy(STAGING, "Experiment"),
     {"rotation": False, "pending_deletion": True, "tags": {"Team": "research"}}),
]


def wait_for(endpoint, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                sys.exit(f"demo_seed: {endpoint} does not answer: {e}")
            time.sleep(0.5)


def session_for(endpoint, account):
    """Credentials acting in `account`: moto maps an assumed role to the role's account."""
    sts = boto3.client(
        "sts",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    c = sts.assume_role(RoleArn=role(account, AUDIT_ROLE), RoleSessionName="demo-seed")["Credentials"]
    return boto3.Session(
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
    )


TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}
IDENTITY_POLICIES = {
    # role -> inline policy
    "PaymentsApp": {"Version": "2012-10-17", "Statement": [
        {"Sid": "DecryptEverything", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"}]},
    "KMSAdmin": None,
}
AUDITORS_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:List*"],
     "Resource": "*"}]}


def seed_iam(iam):
    """IAM identities whose policies reach delegating keys; idempotent."""
    have = {r["RoleName"] for page in iam.get_paginator("list_roles").paginate() for r in page["Roles"]}
    created = 0
    for name, inline in IDENTITY_POLICIES.items():
        if name in have:
            continue
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_EC2))
        if inline is not None:
            iam.put_role_policy(RoleName=name, PolicyName="kms", PolicyDocument=json.dumps(inline))
        created += 1
    users = {u["UserName"] for page in iam.get_paginator("list_users").paginate() for u in page["Users"]}
    if "carol" not in users:
        iam.create_user(UserName="carol")
        iam.create_group(GroupName="kms-auditors")
        iam.add_user_to_group(GroupName="kms-auditors", UserName="carol")
        arn = iam.create_policy(PolicyName="KmsReadOnly",
                                PolicyDocument=json.dumps(AUDITORS_POLICY))["Policy"]["Arn"]
        iam.attach_group_policy(GroupName="kms-auditors", PolicyArn=arn)
        created += 1
    return created


def existing_aliases(kms):
    names = set()
    for page in kms.get_paginator("list_aliases").paginate():
        names.update(a["AliasName"] for a in page["Aliases"])
    return names


def seed_key(kms, account, alias, description, policy, opts):
    args = {
        "Description": description,
        "KeySpec": opts.get("spec", "SYMMETRIC_DEFAULT"),
        # AWS defaults KeyUsage to ENCRYPT_DECRYPT; moto leaves it empty unless given.
        "KeyUsage": opts.get("usage", "ENCRYPT_DECRYPT"),
        "Tags": [
            {"TagKey": k, "TagValue": v}
            for k, v in {"Environment": ACCOUNTS[account], **opts.get("tags", {})}.items()
        ],
    }
    if policy is not None:
        args["Policy"] = json.dumps(policy, indent=2)
    key_id = kms.create_key(**args)["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    if opts.get("rotation"):
        kms.enable_key_rotation(KeyId=key_id)
    if opts.get("grant"):
        kms.create_grant(
            KeyId=key_id,
            GranteePrincipal=role(account, opts["grant"]),
            Operations=["Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"],
            Name=f"{opts['grant']}-ebs-volumes",
        )
    if opts.get("pending_deletion"):
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    return key_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("DEMO_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "http://127.0.0.1:5055",
    )
    endpoint = parser.parse_args().endpoint.rstrip("/")
    wait_for(endpoint)
    retries = Config(retries={"max_attempts": 5, "mode": "standard"})
    created = skipped = 0
    for account, name in ACCOUNTS.items():
        session = session_for(endpoint, account)
        iam = session.client("iam", endpoint_url=endpoint, region_name="us-east-1", config=retries)
        created += seed_iam(iam)
        for region in REGIONS:
            kms = session.client("kms", endpoint_url=endpoint, region_name=region, config=retries)
            have = existing_aliases(kms)
            for key_account, key_region, alias, description, policy, opts in KEYS:
                if (key_account, key_region) != (account, region):
                    continue
                if alias in have:
                    skipped += 1
                    continue
                key_id = seed_key(kms, account, alias, description, policy, opts)
                created += 1
                print(f"  {name:<8} {region:<10} {alias:<30} {key_id}")
    print(f"demo_seed: {created} keys and identity sets created, {skipped} keys already present, "
          f"on {endpoint}")


if __name__ == "__main__":
    main()
