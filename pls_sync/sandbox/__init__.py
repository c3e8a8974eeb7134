"""A local stand-in for Salesforce and HubSpot that the unmodified vendor clients can talk to."""
