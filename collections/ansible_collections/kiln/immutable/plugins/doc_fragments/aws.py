# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS connection options of kiln's modules, named and read as amazon.aws modules read them."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region of the group, its Auto Scaling group and target group, like C(eu-west-1).
      - When not set, E(AWS_REGION), E(AWS_DEFAULT_REGION) or E(EC2_REGION), then the SDK's configuration.
      - A name that is no region of any AWS partition is refused before anything changes.
    type: str
    aliases: [aws_region]
  profile:
    description:
      - A profile of the AWS SDK's configuration files to take credentials and settings from.
      - When not set, E(AWS_PROFILE) or E(AWS_DEFAULT_PROFILE).
      - Mutually exclusive with O(access_key), O(secret_key) and O(session_token).
    type: str
    aliases: [aws_profile]
  access_key:
    description:
      - The AWS access key id. When not set, E(AWS_ACCESS_KEY_ID), E(AWS_ACCESS_KEY) or E(EC2_ACCESS_KEY),
        then the SDK's usual sources (profiles, instance roles).
      - Prefer the environment or a profile; the value is never logged.
    type: str
    aliases: [aws_access_key_id, aws_access_key]
  secret_key:
    description:
      - The AWS secret access key.
      - When not set, E(AWS_SECRET_ACCESS_KEY), E(AWS_SECRET_KEY) or E(EC2_SECRET_KEY).
    type: str
    aliases: [aws_secret_access_key, aws_secret_key]
  session_token:
    description:
      - The session token of temporary credentials.
      - When not set, E(AWS_SESSION_TOKEN) or E(AWS_SECURITY_TOKEN).
    type: str
    aliases: [aws_session_token, security_token]
  endpoint_url:
    description:
      - Another endpoint for every AWS service kiln calls, for example a local AWS API in tests.
      - When not set, E(AWS_ENDPOINT_URL), E(AWS_URL) or E(EC2_URL).
    type: str
    aliases: [aws_endpoint_url]
notes:
  - The AWS options are used only where kiln calls AWS (the C(aws) provider and load balancer, the AMIs
    of a version); that needs C(boto3) and C(botocore) on the controller.
"""
