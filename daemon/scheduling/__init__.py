"""Recurring jobs: cron fire times, the firing policies, a fire, and the scheduler."""
