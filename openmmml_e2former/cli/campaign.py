"""``e2former campaign CAMPAIGN.yaml``: many protocol runs as Dask tasks (docs/campaigns.md)."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "campaign", help="run many protocol runs (replicas, inputs) on Dask; rerun to resume"
    )
    parser.add_argument("campaign", help="campaign YAML file (docs/campaigns.md)")
    parser.add_argument("--workers", type=int, default=None, help="local CPU workers (overrides the file)")
    parser.add_argument("--address", default=None, help="a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the campaign report")
    parser.set_defaults(func=run_campaign_command)


def run_campaign_command(args) -> int:
    from ..campaign import load_campaign, run_campaign

    campaign = load_campaign(args.campaign)
    if args.workers is not None:
        campaign.cluster["workers"] = args.workers
    if args.address:
        campaign.cluster["address"] = args.address
    if args.report_only:
        from ..analysis.campaign import write_campaign_report

        print(write_campaign_report(campaign.output))
        return 0
    results = run_campaign(campaign)
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0
