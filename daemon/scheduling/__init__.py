"""Recurring jobs: cron fire times, the policies, a fire's id and record, a run's start, the held-burst
protocol, the schedule commands, and the scheduler's heap."""
