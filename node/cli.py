"""The `gannet` command line: one click group, subcommands by subsystem.

Every command fails with a one-line message and a non-zero exit on bad input
(`click.ClickException`), never a traceback.
"""

import click

from node.cli_doctor import doctor
from node.cli_genesis import genesis_group
from node.cli_job import job_group
from node.cli_node import devnet_cmd, node_group
from node.cli_provider import provider_group
from node.cli_testnet import testnet_cmd
from node.cli_tokenomics import tokenomics_cmd
from node.cli_wallet import wallet_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gannet")
def main() -> None:
    """Gannet: a proof-of-compute proof-of-stake node."""


main.add_command(doctor)
main.add_command(genesis_group)
main.add_command(node_group)
main.add_command(devnet_cmd)
main.add_command(testnet_cmd)
main.add_command(tokenomics_cmd)
main.add_command(wallet_group)
main.add_command(provider_group)
main.add_command(job_group)
