"""``cosa config show`` — the configuration a run would use, each key with its documentation."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    from cosa.config.schema import RECIPE_NAMES

    parser = commands.add_parser("config", help="configuration tools (show)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the configuration a run would use, each key with its comment",
        description="Print the configuration that cosa train would use with these options, as YAML, each key "
        "under the comment that documents it in the schema. The output is a complete config file: "
        "cosa train --config FILE takes it as it is.",
    )
    show.add_argument("--config", help="preset (voc, coco, demo, own) or a YAML file (default voc)")
    show.add_argument("--recipe", choices=RECIPE_NAMES, help="training recipe (default: the config's, release)")
    show.add_argument(
        "--data",
        help="dataset root; where the config scales its settings to the data (data.scale_to_data: own), "
        "they are measured on it as cosa train would",
    )
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=8")
    show.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    from cosa.config.annotated import annotated_yaml
    from cosa.data.scaled import load_config_for_data

    config = args.config or "voc"
    cfg, scaled = load_config_for_data(config, args.recipe, args.data, args.overrides)
    options = ["--config", config, "--recipe", cfg.method.recipe, *(["--data", args.data] if args.data else [])]
    header = [f"The configuration of: cosa train {' '.join([*options, *args.overrides])}"]
    if scaled:
        header.append(scaled)
    elif cfg.data.scale_to_data:
        header.append("Without --data: the values before cosa train measures the data (data.scale_to_data).")
    print(annotated_yaml(cfg, header), end="")
    return 0
