-- Undo 0003_two_way_state.
DROP TABLE [sync].[resend];

DROP TABLE [sync].[row_state];
